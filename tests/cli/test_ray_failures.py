"""``taglens analyze --engine ray`` through the installed entry point, when something cannot work:
a Ray address that does not answer or is a Ray Client one, an S3 input or output that cannot be
used (against a real moto server), an output folder that cannot be made. Each gives one line that
says what to do and exit status 1, found before any model loads or Ray starts."""

from __future__ import annotations

import pytest

from taglens import distributed
from taglens.errors import TaglensError
from taglens.io.locations import LocationError
from taglens.models.modelset import ModelSet, TaskRequest

from ..conftest import photo
from ..s3 import free_port, moto_server
from .installed import error_lines, run_taglens


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s3-upload")
    with moto_server() as server:
        client = server.client()
        client.create_bucket(Bucket="photos")
        for i in range(2):
            photo(30, 20, i).save(folder / f"img{i}.png")
            client.upload_file(str(folder / f"img{i}.png"), "photos", f"in/img{i}.png")
        yield server


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    photo(30, 20).save(folder / "a.png")
    return folder


def analyze(checkpoints, inputs, output, *extra, env=None):
    return run_taglens("analyze", inputs, "--engine", "ray", "--tasks", "nsfw", "--nsfw-model", checkpoints["vit"],
                       "-o", output, *extra, env=env, timeout=120)


def one_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    return line


def test_an_address_where_nothing_answers(checkpoints, images, tmp_path):
    port = free_port()
    line = one_line(analyze(checkpoints, images, tmp_path / "out", "--address", f"127.0.0.1:{port}"))
    assert f"--address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port}" in line
    assert "leave out --address (and RAY_ADDRESS) to start a local Ray instance" in line


def test_ray_address_from_the_environment_is_named_as_such(checkpoints, images, tmp_path):
    port = free_port()
    line = one_line(analyze(checkpoints, images, tmp_path / "out", env={"RAY_ADDRESS": f"127.0.0.1:{port}"}))
    assert f"RAY_ADDRESS=127.0.0.1:{port}: nothing answers" in line


def test_a_ray_client_address_is_refused(checkpoints, images, tmp_path):
    line = one_line(analyze(checkpoints, images, tmp_path / "out", "--address", "ray://127.0.0.1:10001"))
    assert "Ray Data, which cannot run over Ray Client (ray://)" in line and "ray job submit" in line


def test_an_input_bucket_that_does_not_exist(checkpoints, s3, tmp_path):
    line = one_line(analyze(checkpoints, "s3://no-such-bucket/in/", tmp_path / "out", env=s3.env()))
    assert line.endswith("s3://no-such-bucket/in/: no such bucket 'no-such-bucket' (taglens does not create buckets)")


def test_credentials_the_service_refuses(checkpoints, tmp_path):
    with moto_server(enforce_auth=True) as strict:
        line = one_line(analyze(checkpoints, "s3://photos/in/", tmp_path / "out", env=strict.env()))
    assert "s3://photos/in/: access denied: check the credentials (AWS_ACCESS_KEY_ID" in line


def test_an_endpoint_that_is_down(checkpoints, s3, tmp_path):
    env = s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    line = one_line(analyze(checkpoints, "s3://photos/in/", tmp_path / "out", env=env))
    assert "s3://photos/in/: cannot reach the storage service (" in line and "check AWS_ENDPOINT_URL" in line


def test_an_output_bucket_that_does_not_exist(checkpoints, s3, images):
    line = one_line(analyze(checkpoints, images, "s3://no-such-bucket/out/", env=s3.env()))
    assert line.endswith("s3://no-such-bucket/out/: no such bucket 'no-such-bucket' (taglens does not create buckets)")


def test_an_output_folder_that_cannot_be_made(checkpoints, images, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    line = one_line(analyze(checkpoints, images, out))
    assert line.startswith("Error: ") and f"{out}: cannot write there" in line
    assert not out.exists()


def test_everything_is_checked_before_models_load_or_ray_starts(checkpoints, s3, monkeypatch, images, tmp_path):
    def fail(*args, **kwargs):
        raise AssertionError("models were loaded (or Ray started) before the locations were checked")

    monkeypatch.setattr(distributed, "plan_for", fail)
    monkeypatch.setattr(distributed, "ray_session", fail)
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    models = ModelSet(nsfw_model=checkpoints["vit"], device="cpu")
    request = TaskRequest(tasks=("nsfw",))
    with pytest.raises(LocationError, match="no such bucket"):
        distributed.analyze(["s3://no-such-bucket/in/"], request, models, tmp_path / "out")
    with pytest.raises(LocationError, match="no such bucket"):
        distributed.analyze([str(images)], request, models, "s3://no-such-bucket/out/")
    (tmp_path / "file").write_text("")
    with pytest.raises(TaglensError, match="cannot write there"):
        distributed.analyze([str(images)], request, models, tmp_path / "file" / "out")
