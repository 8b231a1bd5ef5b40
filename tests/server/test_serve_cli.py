"""``taglens serve``: flags become validated Settings, checkpoints are checked before uvicorn starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from taglens.cli import cli


@pytest.fixture
def launched(monkeypatch):
    """uvicorn.run replaced by a recorder: what would have been served, and how."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def model_flags(models):
    return ["--tagger", models["tagger"], "--siglip", models["siglip"], "--nsfw-model", models["nsfw_model"]]


def test_flags_reach_the_app(launched, models, library, monkeypatch, tmp_path):
    monkeypatch.setenv("TAGLENS_LIBRARY", str(library["folder"]))
    result = CliRunner().invoke(cli, ["serve", *model_flags(models), "--port", "8123", "--max-batch-size", "16",
                                      "--max-wait-ms", "2.5", "--queue-size", "64", "--max-images", "8",
                                      "--allow-path", str(tmp_path), "--cors-origin", "http://localhost:3000"])
    assert result.exit_code == 0, result.output
    [(app, kwargs)] = launched
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    s = app.state.settings
    assert (s.max_batch_size, s.max_wait_ms, s.queue_size, s.max_images_per_request) == (16, 2.5, 64, 8)
    assert s.library == library["folder"].resolve() and s.allow_paths == (tmp_path.resolve(),)
    assert s.cors_origins == ("http://localhost:3000",) and s.api_key is None
    assert "http://127.0.0.1:8123/" in result.output


def test_without_flags_the_librarys_checkpoints_are_chosen(launched, models, library, monkeypatch):
    from taglens.server.app import choose_checkpoints
    from taglens.server.settings import Settings

    monkeypatch.setenv("TAGLENS_LIBRARY", str(library["folder"]))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 0, result.output
    [(app, _)] = launched
    from taglens.library import Library

    with Library.open(library["folder"]) as lib:
        current = lib.current_models()
    chosen = choose_checkpoints(app.state.settings, current)
    assert chosen == {"tagger": current["tag"], "siglip": current["embed"], "nsfw_model": current["nsfw"]}
    assert chosen["siglip"] == str(Path(models["siglip"]).resolve())
    assert choose_checkpoints(Settings(), {})["siglip"] == "google/siglip-so400m-patch14-224"


def test_unsafe_or_broken_setups_stop_before_serving(launched, models, tmp_path, monkeypatch):
    monkeypatch.delenv("TAGLENS_LIBRARY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    open_bind = CliRunner().invoke(cli, ["serve", *model_flags(models), "--host", "0.0.0.0"])
    assert open_bind.exit_code == 2 and "--api-key" in open_bind.output
    short_key = CliRunner().invoke(cli, ["serve", *model_flags(models), "--host", "0.0.0.0", "--api-key", "abc"])
    assert short_key.exit_code == 2 and "at least 16 characters" in short_key.output
    keyed = CliRunner().invoke(cli, ["serve", *model_flags(models), "--host", "0.0.0.0"],
                               env={"TAGLENS_SERVE_API_KEY": "x" * 20})
    assert keyed.exit_code == 0, keyed.output
    assert launched[-1][0].state.settings.api_key.get_secret_value() == "x" * 20
    no_library = CliRunner().invoke(cli, ["serve", *model_flags(models), "--library", str(tmp_path)])
    assert no_library.exit_code == 2 and "no library at" in no_library.output
    missing = CliRunner().invoke(cli, ["serve", "--tagger", str(tmp_path / "nope"), "--siglip", models["siglip"],
                                       "--nsfw-model", models["nsfw_model"]])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert len(launched) == 1


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--max-batch-size" in result.output


def test_a_port_in_use_is_one_line_before_any_model_loads(tmp_path):
    import socket
    import time

    from ..cli.entry import one_clean_line, taglens

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        # a checkpoint that does not exist: had the models come first, that would be the error
        result = taglens("serve", "--port", port, "--tagger", tmp_path / "no-such-checkpoint",
                         env={"TAGLENS_LIBRARY": "", "XDG_DATA_HOME": str(tmp_path / "data")})
    assert result.returncode == 1
    assert one_clean_line(result) == (f"Error: cannot serve on 127.0.0.1:{port}: another program is listening there; "
                                      "stop it or choose another --port")
    assert result.stderr.count("\n") == 1 and "taglens serve: http" not in result.stderr
    assert time.monotonic() - started < 30
