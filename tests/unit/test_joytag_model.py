"""JoyTag against the reference implementation's own numbers (tests/fixtures/joytag-tiny), stage by
stage, single and batched; the full-size layout against the released checkpoint's key list; and
clear errors for broken checkpoint folders."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from taglens.errors import CheckpointError
from taglens.io.decode import decode_image
from taglens.models.joytag_vit import RELEASED_CONFIG, JoyTag, JoyTagConfig, checkpoint_filter, expected_shapes, load_model, load_tags, parse_cnn_stem
from taglens.models.joytag import CLIP_MEAN, CLIP_STD, JoyTagTransform
from taglens.models.joytag import Tagger
from taglens.models.tag_selection import TagSelection
from taglens.testing import write_joytag
from taglens.testing.joytag import PRESETS

from ..conftest import FIXTURES, JOYTAG_TINY

EXPECTED = json.loads((JOYTAG_TINY / "expected.json").read_text())
BY_ID = {entry["id"]: entry for entry in EXPECTED["images"]}
TENSORS = load_file(JOYTAG_TINY / "expected_tensors.safetensors")
# The three images whose input is what taglens's decoder gives (alpha composited onto white).
IDS = ["photo_70x50", "gray_45x30", "rgba_40x90__alpha_on_white"]
STAGES = {  # our forward_intermediates name -> the fixture's tensor suffix
    "stem": "stem_out_chw",
    "tokens": "tokens_with_pos",
    "block0": "block0_out",
    "block1": "block1_out",
    "final_norm": "final_norm_out",
    "pooled": "pooled",
    "logits": "logits",
}


def fixture_image(image_id: str) -> Image.Image:
    """The image as each variant saw it: taglens's decoder, or for the reference's own RGBA
    entry, the file with its alpha dropped (the reference pastes without a mask)."""
    path = JOYTAG_TINY / BY_ID[image_id]["file"]
    if BY_ID[image_id]["variant"] == "reference" and image_id == "rgba_40x90":
        return Image.open(path).convert("RGB")
    return decode_image(path)


@pytest.fixture(scope="module")
def model() -> JoyTag:
    return load_model(JOYTAG_TINY)


@pytest.fixture(scope="module")
def transform() -> JoyTagTransform:
    return JoyTagTransform(EXPECTED["config"]["image_size"])


def test_constants_are_the_references():
    assert list(CLIP_MEAN) == EXPECTED["normalize"]["mean"] and list(CLIP_STD) == EXPECTED["normalize"]["std"]
    assert set(IDS) | {"rgba_40x90"} == set(BY_ID)


@pytest.mark.parametrize("image_id", IDS + ["rgba_40x90"])
def test_padded_and_resized_image_is_identical(transform, image_id):
    square = np.asarray(transform.pad_and_resize(fixture_image(image_id)))
    assert hashlib.sha256(square.tobytes()).hexdigest() == BY_ID[image_id]["resized_uint8_sha256"]
    np.testing.assert_array_equal(square.transpose(2, 0, 1), TENSORS[f"{image_id}.resized_uint8_chw"].numpy())


@pytest.mark.parametrize("image_id", IDS + ["rgba_40x90"])
def test_model_input_matches(transform, image_id):
    x = transform(fixture_image(image_id))
    expected = TENSORS[f"{image_id}.input_chw"].numpy()
    assert x.dtype == np.float32 and x.shape == expected.shape
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
    summary = BY_ID[image_id]["input"]
    assert float(x.astype(np.float64).sum()) == pytest.approx(summary["sum"], abs=1e-3)
    for sample in summary["samples"]:
        assert x[tuple(sample["index_chw"])] == pytest.approx(sample["value"], abs=1e-6)


@pytest.mark.parametrize("image_id", IDS + ["rgba_40x90"])
def test_every_stage_matches_single(model, transform, image_id):
    with torch.no_grad():
        out = model.forward_intermediates(torch.from_numpy(transform(fixture_image(image_id)))[None])
    for ours, theirs in STAGES.items():
        torch.testing.assert_close(out[ours][0], TENSORS[f"{image_id}.{theirs}"], rtol=0, atol=1e-5, msg=ours)
    entry = BY_ID[image_id]
    np.testing.assert_allclose(out["logits"][0].numpy(), entry["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(out["logits"][0]).numpy(), entry["scores"], rtol=0, atol=1e-6)


def test_every_stage_matches_batched(model, transform):
    ids = IDS + ["rgba_40x90"]
    batch = torch.from_numpy(np.stack([transform(fixture_image(i)) for i in ids]))
    with torch.no_grad():
        out = model.forward_intermediates(batch)
        logits = model(batch)
    torch.testing.assert_close(logits, out["logits"], rtol=0, atol=0)  # forward == the staged pass
    for row, image_id in enumerate(ids):
        for ours, theirs in STAGES.items():
            torch.testing.assert_close(out[ours][row], TENSORS[f"{image_id}.{theirs}"], rtol=0, atol=1e-5, msg=ours)
        np.testing.assert_allclose(torch.sigmoid(logits[row]).numpy(), BY_ID[image_id]["scores"], rtol=0, atol=1e-6)


def test_features_and_head_are_separate(model, transform):
    x = torch.from_numpy(transform(fixture_image("photo_70x50")))[None]
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        logits = model.forward_head(tokens)
    assert tokens.shape == (1, 16, 32) and pooled.shape == (1, 32) and logits.shape == (1, 37)
    torch.testing.assert_close(pooled[0], TENSORS["photo_70x50.pooled"], rtol=0, atol=1e-5)


def test_tagger_scores_and_tags_match_single_and_batched():
    tagger = Tagger.from_pretrained(JOYTAG_TINY, device="cpu")
    paths = [JOYTAG_TINY / BY_ID[i]["file"] for i in IDS]  # the decoder composites the RGBA file on white
    single = [tagger(p, threshold=0.0, batch_size=1)[0] for p in paths]
    batched = tagger(paths, threshold=0.0, batch_size=8)
    thresholded = tagger(paths, batch_size=8)
    for image_id, one, many, kept in zip(IDS, single, batched, thresholded):
        entry = BY_ID[image_id]
        expected = dict(zip(load_tags(JOYTAG_TINY), entry["scores"]))
        for record in (one, many):
            assert record.error is None and len(record.tags) == 37
            assert [t.score for t in record.tags] == sorted((t.score for t in record.tags), reverse=True)
            for t in record.tags:
                assert t.score == pytest.approx(expected[t.tag], abs=1e-6)
        # default threshold 0.4, strictly greater: the reference's tags, listed by score
        assert {t.tag for t in kept.tags} == set(entry["tags_above_threshold"])
        order = {name: i for i, name in enumerate(load_tags(JOYTAG_TINY))}
        assert ", ".join(sorted((t.tag for t in kept.tags), key=order.get)) == entry["tag_string"]
        assert [t.tag for t in kept.tags[:5]] == [name for name, _ in entry["top5"]]
        np.testing.assert_allclose([t.score for t in kept.tags[:5]], [s for _, s in entry["top5"]], rtol=0, atol=1e-6)


def test_tagger_identity_and_job_shape():
    tagger = Tagger.from_pretrained(JOYTAG_TINY, device="cpu")
    job = tagger.job(TagSelection(top_k=3))
    assert job.name == "tag" and job.transform == JoyTagTransform(64) and job.transform.input_size == 64
    assert job.model_id == str(JOYTAG_TINY.resolve()) and job.revision.startswith("local-")
    assert tagger.tags == load_tags(JOYTAG_TINY) and len(tagger.tags) == 37
    pixels = np.stack([JoyTagTransform(64)(fixture_image(i)) for i in IDS])
    out = job(pixels)
    assert len(out) == 3 and all(set(d) == {"tags"} and len(d["tags"]) == 3 for d in out)
    assert [t.tag for t in out[0]["tags"]] == [name for name, _ in BY_ID["photo_70x50"]["top5"][:3]]


def test_bad_image_gives_an_error_record_not_an_exception():
    tagger = Tagger.from_pretrained(JOYTAG_TINY, device="cpu")
    records = tagger([b"not an image", JOYTAG_TINY / "photo_70x50.png"])
    assert records[0].error and records[0].tags is None
    assert records[1].error is None and records[1].tags


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lower_precision_runs_and_stays_close(dtype):
    tagger = Tagger.from_pretrained(JOYTAG_TINY, device="cpu", dtype=dtype)
    assert tagger.model.head.weight.dtype == getattr(torch, dtype)
    record = tagger(JOYTAG_TINY / "photo_70x50.png", threshold=0.0)[0]
    expected = dict(zip(load_tags(JOYTAG_TINY), BY_ID["photo_70x50"]["scores"]))
    assert max(abs(t.score - expected[t.tag]) for t in record.tags) < 0.05


# ----------------------------------------------------------------------------- the full-size layout


def test_full_size_model_matches_the_released_key_list():
    released = json.loads((FIXTURES / "joytag-full-keys.json").read_text())
    assert RELEASED_CONFIG == released["released_config"] == PRESETS["released"]
    config = JoyTagConfig.from_dict(released["released_config"])
    with torch.device("meta"):
        model = JoyTag(config)
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert ours == released["tensors"]  # name for name, shape for shape
    assert list(ours) == list(released["tensors"])  # and in the same order
    assert len(ours) == released["num_tensors"] == 190
    assert sum(p.numel() for p in model.parameters()) == released["num_elements"]
    assert list(model.buffers()) == released["buffers"] == []


def test_cnn_stem_string_is_parsed():
    layers = parse_cnn_stem(RELEASED_CONFIG["cnn_stem"])
    convs = [x for x in layers if x.kind == "conv"]
    assert [(c.channels, c.kernel, c.stride, c.padding) for c in convs] == [
        (64, 3, 2, 1), (128, 3, 2, 1), (256, 3, 2, 1), (512, 3, 2, 1), (768, 1, 1, 0)]
    assert [x.kind for x in layers[:3]] == ["conv", "ln", "relu"]
    for bad in ("conv:c=8;pool", "ln;conv:c=8", "conv:k=3", "conv:c=8,q=1"):
        with pytest.raises(ValueError):
            parse_cnn_stem(bad)


def test_tiny_builder_writes_the_released_style(tmp_path):
    folder = write_joytag(tmp_path / "jt")
    assert (folder / "config.json").read_bytes() == (JOYTAG_TINY / "config.json").read_bytes()
    tags = (folder / "top_tags.txt").read_text().split("\n")
    assert len(tags) == 37 and len(set(tags)) == 37 and "^_^" in tags
    state = load_file(folder / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(JoyTagConfig.from_dict(PRESETS["tiny"]))
    assert {k for k in state} == set(load_file(JOYTAG_TINY / "model.safetensors"))
    record = Tagger.from_pretrained(folder, device="cpu")(JOYTAG_TINY / "photo_70x50.png", threshold=0.0)[0]
    assert len(record.tags) == 37 and np.std([t.score for t in record.tags]) > 0.05


# ----------------------------------------------------------------------------- checkpoint filter


def test_head_with_nine_extra_rows_keeps_the_first_n_tags(tmp_path):
    folder = write_joytag(tmp_path / "old", extra_head_rows=9)
    state = load_file(folder / "model.safetensors")
    assert state["head.weight"].shape == (46, 32) and state["head.bias"].shape == (46,)
    model = load_model(folder)
    assert torch.equal(model.head.weight, state["head.weight"][:37])
    assert torch.equal(model.head.bias, state["head.bias"][:37])
    config = JoyTagConfig.from_file(folder / "config.json")
    filtered = checkpoint_filter(state, config)
    assert state["head.weight"].shape == (46, 32)  # the input is not changed
    assert filtered["head.weight"].shape == (37, 32)


def test_filter_names_every_problem():
    config = JoyTagConfig.from_dict(PRESETS["tiny"])
    state = load_file(JOYTAG_TINY / "model.safetensors")
    assert set(checkpoint_filter(state, config)) == set(state)
    broken = dict(state)
    del broken["blocks.1.norm2.bias"]
    broken["blocks.0.qkv_proj.weight"] = torch.zeros(3, 3)
    broken["extra.weight"] = torch.zeros(1)
    broken["head.weight"] = torch.zeros(40, 32)  # neither n_tags nor n_tags + 9 rows
    with pytest.raises(ValueError) as info:
        checkpoint_filter(broken, config)
    message = str(info.value)
    for text in ("missing: blocks.1.norm2.bias", "unexpected: extra.weight", "blocks.0.qkv_proj.weight (3, 3)",
                 "head.weight (40, 32)"):
        assert text in message


# ----------------------------------------------------------------------------- broken folders


@pytest.fixture
def folder(tmp_path):
    target = tmp_path / "joytag"
    target.mkdir()
    for name in ("config.json", "model.safetensors", "top_tags.txt"):
        shutil.copy(JOYTAG_TINY / name, target / name)
    return target


def load_everything(folder):
    return Tagger.from_pretrained(folder, device="cpu")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "top_tags.txt"])
def test_missing_file_is_named(folder, name):
    (folder / name).unlink()
    if name == "model.safetensors":
        save_file({"x": torch.zeros(1)}, folder / "other.safetensors")  # the folder still holds safetensors
    with pytest.raises(CheckpointError, match=rf"{name}: missing"):
        load_everything(folder)


@pytest.mark.parametrize("text, reason", [
    ("{not json", "unreadable"),
    ('["a list"]', "not a JSON object"),
    (json.dumps(dict(PRESETS["tiny"], **{"class": "CLIPLikeModel"})), "class is 'CLIPLikeModel'"),
    (json.dumps({k: v for k, v in PRESETS["tiny"].items() if k != "d_model"}), "missing keys \\['d_model'\\]"),
    (json.dumps(dict(PRESETS["tiny"], num_heads=5)), "divisible by num_heads"),
    (json.dumps(dict(PRESETS["tiny"], cnn_stem="conv:c=8;maxpool")), "unknown cnn_stem layer"),
    (json.dumps(dict(PRESETS["tiny"], surprise=1)), "unknown keys \\['surprise'\\]"),
])
def test_bad_config_is_named(folder, text, reason):
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"config.json: .*{reason}"):
        load_everything(folder)


def test_config_that_does_not_fit_the_weights_is_named(folder):
    (folder / "config.json").write_text(json.dumps(dict(PRESETS["tiny"], mlp_dim=128), indent="\t"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: does not fit config.json .*mlp.linear1.weight"):
        load_everything(folder)


def test_wrong_number_of_tags_is_named(folder):
    (folder / "top_tags.txt").write_text("\n".join(["a", "b", "c"]))
    with pytest.raises(CheckpointError, match=r"top_tags.txt: 3 tags, but config.json says n_tags = 37"):
        load_everything(folder)


def test_corrupt_weights_are_named(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        load_everything(folder)


def test_half_precision_weights_load_as_float32(folder):
    state = load_file(folder / "model.safetensors")
    save_file({k: v.half() for k, v in state.items()}, folder / "model.safetensors")
    model = load_model(folder)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.testing.assert_close(model.head.weight, state["head.weight"].half().float())


# ----------------------------------------------------------------------------- other ViT variants


def test_patch_conv_learned_positions_and_head_mean_after():
    """config.json switches the reference's ViT also has: no cnn_stem (a patch conv), learned
    positions (use_sine false, with a position_ids buffer in the checkpoint), head before mean."""
    config = JoyTagConfig.from_dict(dict(PRESETS["tiny"], cnn_stem=None, use_sine=False, head_mean_after=True))
    shapes = expected_shapes(config)
    assert shapes["patch_embeddings.weight"] == (32, 3, 16, 16) and shapes["pos_embedding.embedding.weight"] == (16, 32)
    torch.manual_seed(0)
    model = JoyTag(config).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_intermediates(x)
        patches = F.conv2d(x, model.patch_embeddings.weight, model.patch_embeddings.bias, stride=16)
        torch.testing.assert_close(out["tokens"], patches.flatten(2).transpose(1, 2) + model.pos_embedding.embedding.weight)
        torch.testing.assert_close(out["logits"], model.head(out["final_norm"]).mean(dim=1))
        torch.testing.assert_close(out["pooled"], out["final_norm"].mean(dim=1))
    state = dict(model.state_dict(), **{"pos_embedding.position_ids": torch.arange(16)})
    assert set(checkpoint_filter(state, config)) == set(shapes)


def test_batch_norm_and_gelu_stem_layers():
    config = JoyTagConfig.from_dict(dict(PRESETS["tiny"], cnn_stem="conv:c=8;bn;gelu;conv:c=32,k=8,s=8,p=0"))
    assert {"patch_embeddings.conv.1.running_mean", "patch_embeddings.conv.1.num_batches_tracked"} <= set(
        expected_shapes(config))
    model = JoyTag(config).eval()
    with torch.no_grad():
        stem = model.forward_intermediates(torch.randn(1, 3, 64, 64))["stem"]
    assert stem.shape == (1, 32, 4, 4)


def test_positions_are_the_sin_cos_layout():
    """Quarters: sin(x w), cos(x w), sin(y w), cos(y w); w_i = 10000 ** -(i / (d/4 - 1)); row-major."""
    from taglens.models.joytag_vit import sincos_positions

    pos = sincos_positions(3, 5, 8, torch.device("cpu"), torch.float32).double()
    w = 10000.0 ** -(torch.arange(2, dtype=torch.float64) / 1)
    token = 2 * 5 + 3  # row y=2, column x=3
    expected = torch.cat([(3 * w).sin(), (3 * w).cos(), (2 * w).sin(), (2 * w).cos()])
    torch.testing.assert_close(pos[token], expected, rtol=0, atol=1e-6)
