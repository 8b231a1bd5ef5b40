"""The CPU's Linear routes (taglens.engine.cpu_routes, cpu_probe, placement): the oneDNN float32
route gives plain float32's numbers (1e-5) for every family, whichever route the probe would pick
on this CPU (both are forced here, on Intel with AMX as on AMD), on the same inputs and batch; the
probe's decision is measured once and cached; int8 quantises every family's Linear layers but its
output layers, per channel, on the int8 engine measured fastest."""

from __future__ import annotations

import copy
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from torch import nn

from taglens.engine import cpu_probe, cpu_routes
from taglens.models import joytag, siglip, vit_classifier

from ..conftest import photo

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_probe.CACHE_ENV, str(tmp_path / "cache"))


def pixels(transform, count: int = 3) -> np.ndarray:
    return np.stack([transform(photo(64 + 8 * i, 48, seed=i)) for i in range(count)])


def load(family: str, checkpoints, dtype: str = "float32"):
    """(the loaded model, its network, a batch -> float32 outputs function)."""
    if family == "joytag":
        tagger = joytag.Tagger.from_pretrained(checkpoints["joytag"], device="cpu", dtype=dtype)
        return tagger.model, lambda x: tagger.scores(pixels(tagger.transform))
    if family in ("siglip16", "clip"):
        model = siglip.load_model(checkpoints[family], device="cpu", dtype=dtype)
        return model.model, lambda x: np.concatenate(
            [model.encode_images(pixels(model.transform)), model.encode_texts(["a cat", "two dogs on a beach"])])
    model = vit_classifier.ImageClassifier.from_pretrained(checkpoints[family], device="cpu", dtype=dtype)
    return model.model, lambda x: model.logits(pixels(model.transform))


FAMILIES = ["joytag", "siglip16", "clip", "vit"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_onednn_route_gives_plain_float32s_numbers(family, checkpoints, monkeypatch):
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "default")
    plain_net, plain = load(family, checkpoints)
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "onednn")
    fast_net, fast = load(family, checkpoints)
    assert plain_net.matmul_route.startswith("torch default float32 (forced by")
    assert fast_net.matmul_route.startswith("oneDNN float32")
    assert not any(isinstance(m, cpu_routes.OneDnnLinear) for m in plain_net.modules())
    replaced = sum(isinstance(m, cpu_routes.OneDnnLinear) for m in fast_net.modules())
    assert replaced == sum(cpu_routes.linear_shapes(plain_net).values()) > 0
    want, got = plain(None), fast(None)
    assert np.abs(got - want).max() <= TOLERANCE * max(1.0, float(np.abs(want).max()))


def test_a_layer_goes_back_to_plain_with_the_same_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 8, bias=False)).eval()
    x = torch.randn(2, 5, 24)
    with torch.inference_mode():
        want = net(x)
        assert cpu_routes.use_onednn(net) == 2
        assert torch.allclose(net(x), want, rtol=0, atol=TOLERANCE)
        assert cpu_routes.use_default(net) == 2 and type(net[0]) is nn.Linear
        assert torch.equal(net(x), want)


def test_multihead_attentions_own_projection_keeps_the_default_route():
    net = nn.ModuleDict({"attention": nn.MultiheadAttention(16, 2), "mlp": nn.Linear(16, 16)})
    assert cpu_routes.use_onednn(net) == 1
    assert type(net["attention"].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def weight_products(run, weight: torch.Tensor) -> tuple[int, int]:
    """(batched products of a copy of ``weight`` per token, aten::linear calls) while ``run`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    events = prof.events()
    expanded = [e for e in events if e.name == "aten::bmm" and len(e.input_shapes[1]) == 3
                and sorted(e.input_shapes[1][1:]) == sorted(weight.shape)]
    return len(expanded), sum(e.name == "aten::linear" for e in events)


def test_batch_first_attention_projects_seq_first_inputs_in_one_product():
    """The pooling head's shape (a probe attending over tokens, key is value), weights frozen as
    a placement leaves them: without the hook torch expands the key/value weight to every token
    (aten::bmm on a copy); with it one product per projection, key and value still projected once,
    the same numbers."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4, batch_first=True).eval().requires_grad_(False)
    probe, tokens = torch.randn(3, 1, 32), torch.randn(3, 20, 32)
    with torch.inference_mode():
        want = attention(probe, tokens, tokens)[0]
        key_value = attention.in_proj_weight[32:]
        assert weight_products(lambda: attention(probe, tokens, tokens), key_value)[0] == 1
        assert cpu_routes.feed_seq_first(nn.Sequential(attention, nn.MultiheadAttention(32, 4))) == 1
        assert cpu_routes.feed_seq_first(attention) == 1 and len(attention._forward_pre_hooks) == 1
        copies, linears = weight_products(lambda: attention(probe, tokens, tokens), key_value)
        got = attention(probe, tokens, tokens)[0]
    assert copies == 0 and linears == 3  # q, packed k/v, out_proj
    assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_siglips_pooling_head_gets_seq_first_inputs_on_every_cpu_dtype(dtype, checkpoints):
    model = siglip.load_model(checkpoints["siglip16"], device="cpu", dtype=dtype)
    head = model.model.vision_model.head.attention
    assert list(head._forward_pre_hooks.values()) == [cpu_routes._seq_first_inputs]
    batch = pixels(model.transform)
    with torch.inference_mode():
        assert weight_products(lambda: model.encode_images(batch), head.in_proj_weight[head.embed_dim:]) == (0, ANY)


def test_the_probe_measures_once_then_reads_its_cache(monkeypatch):
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "auto")
    shapes = cpu_routes.linear_shapes(nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 64)))
    first = cpu_probe.float32_route(shapes)
    assert first.source == "measured" and first.chosen in ("onednn", "default")
    assert first.error is not None and first.error <= TOLERANCE or first.chosen == "default"
    assert set(first.times_ms) == {"default", "onednn"}
    again = cpu_probe.float32_route(shapes)
    assert again.source == "cached" and again.chosen == first.chosen
    assert cpu_probe.cache_path().is_file()
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "probe")
    assert cpu_probe.float32_route(shapes).source == "measured"


def test_the_route_can_be_forced_and_a_bad_value_is_refused(monkeypatch):
    shapes = cpu_routes.linear_shapes(nn.Linear(8, 8))
    for forced in ("default", "onednn"):
        monkeypatch.setenv(cpu_probe.ROUTE_ENV, forced)
        assert cpu_probe.float32_route(shapes).chosen == forced
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "fast")
    with pytest.raises(ValueError, match=cpu_probe.ROUTE_ENV):
        cpu_probe.float32_route(shapes)


def test_a_onednn_computing_float32_in_bfloat16_is_never_chosen(monkeypatch):
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "auto")
    saved = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        decision = cpu_probe.float32_route(cpu_routes.linear_shapes(nn.Linear(8, 8)))
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = saved
    assert decision.chosen == "default" and "bf16" in decision.source


OUTPUT_LAYERS = {"joytag": {"head"}, "siglip16": {"vision_model.head.mlp.fc2", "text_model.head"},
                 "clip": {"visual_projection", "text_projection"}, "vit": {"classifier"}}


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_quantises_every_linear_layer_but_the_outputs_and_stays_near_float32(family, checkpoints, monkeypatch):
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "default")
    _, plain = load(family, checkpoints)
    net, int8 = load(family, checkpoints, dtype="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert net.matmul_route.startswith("dynamic int8 on torch's")
    quantised = [m for m in net.modules() if isinstance(m, DynamicInt8Linear)]
    assert quantised and all(m.weight().qscheme() == torch.per_channel_affine for m in quantised)
    float32 = {name for name, m in net.named_modules() if type(m) is nn.Linear}
    assert float32 == OUTPUT_LAYERS[family]  # every other nn.Linear is int8
    want, got = plain(None), int8(None)
    assert np.isfinite(got).all() and got.shape == want.shape
    assert np.abs(got - want).max() <= 0.1 * max(1.0, float(np.abs(want).max()))


def test_the_probe_wants_onednn_faster_for_one_image_and_for_a_batch(monkeypatch):
    """Faster at 256 rows but slower at a batch's rows (as on a Xeon with AMX): the default."""
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "probe")
    timings = iter([{"default": 1.0, "onednn": 0.5}, {"default": 1.0, "onednn": 1.1}] * 2)
    monkeypatch.setattr(cpu_probe, "best_interleaved", lambda candidates: next(timings))
    shapes = cpu_routes.linear_shapes(nn.Linear(32, 32))
    assert cpu_probe.PROBE_ROWS == (256, 2048)
    assert cpu_probe.float32_route(shapes).chosen == "default"
    timings = iter([{"default": 1.0, "onednn": 0.5}, {"default": 1.0, "onednn": 0.9}])
    assert cpu_probe.float32_route(shapes).chosen == "onednn"


def test_int8_runs_on_the_engine_measured_fastest_and_leaves_torchs_setting_alone():
    offer = cpu_probe.Decision("int8", {"int8 x86": 9.0, "int8 onednn": 5.0, "bfloat16": 7.0}, None, "measured")
    assert cpu_probe.int8_engine(offer) == "onednn"
    assert cpu_probe.int8_engine(cpu_probe.Decision("bfloat16", {}, None, "no kernels")) == "x86"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        want = net(x)
        before = torch.backends.quantized.engine
        outputs = {}
        for engine in cpu_routes.int8_engines():
            quantised = cpu_routes.quantize_int8(copy.deepcopy(net), engine=engine, keep_float32=("2",))
            assert torch.backends.quantized.engine == before
            assert type(quantised[2]) is nn.Linear and type(quantised[0]) is not nn.Linear
            outputs[engine] = quantised(x)
    assert "x86" in outputs
    for got in outputs.values():
        assert (got - want).abs().max() <= 0.05 * want.abs().max()


def test_the_int8_probe_times_every_engine_against_bfloat16(monkeypatch):
    monkeypatch.setattr(cpu_probe, "INT8_SHAPES", ((16, 64, 32),))
    cpu_probe._int8_offer.cache_clear()
    try:
        offer = cpu_probe.int8_offer()
    finally:
        cpu_probe._int8_offer.cache_clear()
    assert set(offer.times_ms) == {f"int8 {engine}" for engine in cpu_routes.int8_engines()} | {"bfloat16"}
    assert offer.chosen in ("int8", "bfloat16") and cpu_probe.int8_engine(offer) in cpu_routes.int8_engines()


def test_int8_is_for_the_cpu_only():
    from taglens.engine.placement import Placement

    with pytest.raises(ValueError, match="CPU only"):
        Placement.resolve(torch.device("cuda"), "int8")


def test_int8_where_bfloat16_is_faster_says_so_once_and_runs(checkpoints, monkeypatch, caplog):
    from taglens.engine import placement

    slower = cpu_probe.Decision("bfloat16", {"int8": 9.0, "bfloat16": 4.0}, None, "measured")
    monkeypatch.setattr(cpu_probe, "int8_offer", lambda: slower)
    placement._say_int8_is_slower.cache_clear()
    with caplog.at_level("WARNING", logger="taglens"):
        first, _ = load("vit", checkpoints, dtype="int8")
        load("joytag", checkpoints, dtype="int8")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "int8 is not faster than bfloat16" in warnings[0] and "--dtype bfloat16" in warnings[0]
    assert first.matmul_route.startswith("dynamic int8")


@pytest.mark.parametrize("family", ["joytag", "vit"])
def test_compile_puts_the_plain_linear_layers_back_first(family, checkpoints, monkeypatch):
    monkeypatch.setenv(cpu_probe.ROUTE_ENV, "onednn")
    if family == "joytag":
        owner = joytag.Tagger.from_pretrained(checkpoints["joytag"], device="cpu")
    else:
        owner = vit_classifier.ImageClassifier.from_pretrained(checkpoints["vit"], device="cpu")
    assert any(isinstance(m, cpu_routes.OneDnnLinear) for m in owner.model.modules())
    owner.compile()  # torch.compile is lazy: nothing compiles until the first batch
    assert not any(isinstance(m, cpu_routes.OneDnnLinear) for m in owner.model.modules())
    assert owner.model.matmul_route == "torch.compile (inductor)"
