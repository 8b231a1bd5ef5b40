"""float32 means IEEE float32: building a placement turns TF32 off for CUDA matmuls and cuDNN
convolutions (torch's own default leaves it on for convolutions); ``tf32`` opts in. The switches
are torch's process-wide flags, readable on a CPU-only build, which is how this is checked here."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from taglens.cli import cli
from taglens.engine.placement import Placement, set_tf32, tf32_enabled
from taglens.models.modelset import ModelSet

from ..conftest import photo


@pytest.fixture(autouse=True)
def torch_defaults():
    """Start each test from torch's defaults (matmuls off, cuDNN convolutions on) and put the
    suite's state back afterwards."""
    saved = tf32_enabled()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    yield
    set_tf32(False)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_torch_leaves_cudnn_tf32_on_by_default():
    assert tf32_enabled() == (False, True)  # what a "float32" GPU run would get without taglens


def test_a_float32_placement_turns_tf32_off():
    placement = Placement.resolve("cpu", "float32")
    assert placement.tf32 is False and placement.dtype == torch.float32
    assert tf32_enabled() == (False, False)
    assert torch.get_float32_matmul_precision() == "highest"


def test_tf32_is_an_explicit_opt_in():
    assert Placement.resolve("cpu", "float32", tf32=True).tf32 is True
    assert tf32_enabled() == (True, True)
    Placement.resolve("cpu", "float32")  # the next placement without it turns it off again
    assert tf32_enabled() == (False, False)


@pytest.mark.parametrize("load", ["load_tagger", "load_embedder", "load_nsfw"])
def test_a_float32_model_set_runs_without_tf32_and_tf32_true_turns_it_on(checkpoints, load):
    models = dict(tagger=checkpoints["joytag"], siglip=checkpoints["siglip16"], nsfw_model=checkpoints["vit"],
                  device="cpu")
    family = getattr(ModelSet(**models), load)()
    assert family is not None and tf32_enabled() == (False, False)
    getattr(ModelSet(**models, tf32=True), load)()
    assert tf32_enabled() == (True, True)


@pytest.mark.parametrize("flags, expected", [((), (False, False)), (("--tf32",), (True, True))])
def test_the_cli_flag(checkpoints, tmp_path, flags, expected):
    photo(40, 30).save(tmp_path / "a.png")
    result = CliRunner().invoke(cli, ["tag", str(tmp_path / "a.png"), "--model", str(checkpoints["joytag"]),
                                      "--device", "cpu", "-q", *flags])
    assert result.exit_code == 0, result.output
    assert tf32_enabled() == expected


@pytest.mark.parametrize("tf32", [False, True])
def test_the_server_places_its_models_as_told(checkpoints, tf32):
    from taglens.server import Settings

    from ..server.conftest import started

    assert Settings().tf32 is False
    models = {"tagger": str(checkpoints["joytag"]), "siglip": str(checkpoints["siglip16"]),
              "nsfw_model": str(checkpoints["vit"])}
    client = started(models, tf32=tf32)
    try:
        assert tf32_enabled() == (tf32, tf32)
    finally:
        client.__exit__(None, None, None)
