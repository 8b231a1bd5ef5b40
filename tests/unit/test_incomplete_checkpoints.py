"""A checkpoint whose tensors do not fill the model is refused, naming them, for every family:
transformers would fill the gaps with random weights and only log about it."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from taglens.errors import CheckpointError
from taglens.models.siglip import load_model as load
from taglens.models.vit_classifier import ImageClassifier

from ..cli.installed import error_lines, run_taglens
from ..conftest import photo


def damaged(source, folder, edit):
    """A copy of a checkpoint folder whose model.safetensors went through ``edit(tensors)``."""
    shutil.copytree(source, folder)
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def without_text_tower(tensors):
    for name in [n for n in tensors if n.startswith("text_model.")]:
        del tensors[name]


@pytest.mark.parametrize("name, total", [("siglip16", 88), ("clip", 78), ("siglip16_tf5", 88)])
def test_a_dual_encoder_without_its_text_tower_is_refused_by_name(checkpoints, tmp_path, name, total):
    assert len(load_file(checkpoints[name] / "model.safetensors")) == total
    folder = damaged(checkpoints[name], tmp_path / "broken", without_text_tower)
    missing = total - len(load_file(folder / "model.safetensors"))
    assert missing > 30
    with pytest.raises(CheckpointError, match=rf"not a complete .* checkpoint; weights missing: {missing} \(") as info:
        load(folder, device="cpu")
    assert "text_model.embeddings.token_embedding.weight" in str(info.value)
    assert "text_model.encoder.layers.*." in str(info.value)  # layers folded, so the line stays short
    assert "\n" not in str(info.value)


def test_unexpected_and_wrongly_shaped_tensors_are_named(checkpoints, tmp_path):
    def edit(tensors):
        tensors["extra.weight"] = torch.zeros(3)
        tensors["vision_model.post_layernorm.weight"] = torch.ones(5)

    folder = damaged(checkpoints["siglip16"], tmp_path / "broken", edit)
    with pytest.raises(CheckpointError) as info:
        load(folder, device="cpu")
    text = str(info.value)
    assert "unexpected weights: 1 (extra.weight)" in text
    assert "weights of the wrong shape: vision_model.post_layernorm.weight ([5] in the file, [32] in the model)" in text


def test_a_classifier_with_an_unexpected_tensor_is_refused(checkpoints, tmp_path):
    folder = damaged(checkpoints["vit"], tmp_path / "broken", lambda t: t.update({"vit.extra.bias": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"image-classifier checkpoint; unexpected weights: 1 \(vit.extra.bias\)"):
        ImageClassifier.from_pretrained(str(folder), device="cpu")


def test_the_cli_refuses_it_in_one_line(checkpoints, tmp_path):
    folder = damaged(checkpoints["siglip16"], tmp_path / "broken", without_text_tower)
    photo(40, 30).save(tmp_path / "a.png")
    result = run_taglens("classify", tmp_path / "a.png", "--model", folder, "--labels", "a cat,a dog")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = error_lines(result.stderr)
    assert "weights missing: 38 (" in line and "text_model.embeddings.token_embedding.weight" in line
    assert "Traceback" not in result.stderr
