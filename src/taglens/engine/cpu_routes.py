"""The CPU's ways of running a model's Linear layers, other than torch's default (MKL's sgemm).

- oneDNN with prepacked float32 weights (`use_onednn`): each ``nn.Linear`` becomes a
  `OneDnnLinear` holding its weight reordered once into oneDNN's blocked layout and calling
  ``torch.ops.mkldnn._linear_pointwise``, the op torch's own compiler (inductor) emits for CPU
  Linear layers. IEEE float32 arithmetic (float32 accumulation): it differs from the default only
  by summation order, ~1e-6 relative. On AMD EPYC, where MKL takes an AVX2 code path, it runs
  float32 matmuls about twice as fast (docs/analyze.md). `taglens.engine.cpu_probe` decides
  per machine whether to use it; `taglens.engine.placement` applies it.
- dynamic int8 (`quantize_int8`): weights quantised per output channel once, activations per
  batch, int8 x int8 -> int32 products (fbgemm's x86 kernels with VNNI, or oneDNN's, with AMX
  where the CPU has it: `cpu_probe.int8_offer` measures which). The families' output layers
  stay float32. Moves scores by up to ~4e-2 (docs/analyze.md): opt-in only, ``--dtype int8``.

- seq-first attention inputs (`feed_seq_first`): a batch-first ``nn.MultiheadAttention`` transposes
  its inputs to (sequence, batch, features) and projects them with ``F.linear``; on that strided
  view, with the weights' gradients off, torch's matmul does not fold the batch into one product
  but expands the weight to every sequence position and copies it (680 million elements per
  batch in SigLIP so400m's pooling head, whose key/value projection is 2304 x 1152): half the
  SigLIP vision tower's time in bfloat16 on AMD EPYC. Handing it inputs whose transpose is
  contiguous makes the projection one matmul; float32 results move by ~3e-8.

Only exact ``nn.Linear`` modules are replaced: subclasses such as the ``out_proj`` of
``nn.MultiheadAttention`` (SigLIP's pooling head) are read through ``.weight`` by their parent
and keep torch's default route.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter

import torch
from torch import nn


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (out, in) float32 weight reordered once into oneDNN's layout for Linear layers."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().contiguous())


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN with a `pack_weight` weight (any leading dims)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


class OneDnnLinear(nn.Module):
    """An ``nn.Linear`` run by oneDNN with its weight prepacked (float32, inference only).

    The packed weight is a plain attribute, not a parameter or buffer, so ``state_dict`` and
    ``.to()`` leave it alone; `linear` gives back an ``nn.Linear`` with the same numbers."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = pack_weight(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.packed, self.bias)

    def linear(self) -> nn.Linear:
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(self.packed.to_dense())
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain.requires_grad_(False).eval()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear_shapes(module: nn.Module) -> Counter[tuple[int, int]]:
    """(in_features, out_features) -> how many float32 ``nn.Linear`` layers of that shape."""
    return Counter((m.in_features, m.out_features) for m in module.modules()
                   if type(m) is nn.Linear and m.weight.dtype == torch.float32)


def use_onednn(module: nn.Module) -> int:
    """Replace every float32 ``nn.Linear`` of ``module`` (on the CPU) by a `OneDnnLinear`; the count."""
    return _replace(module, lambda m: type(m) is nn.Linear and m.weight.dtype == torch.float32
                    and m.weight.device.type == "cpu", OneDnnLinear)


def use_default(module: nn.Module) -> int:
    """Undo `use_onednn` (``torch.compile`` packs weights its own way); the count."""
    return _replace(module, lambda m: isinstance(m, OneDnnLinear), lambda m: m.linear())


INT8_ENGINES = ("x86", "onednn")
"""torch's quantised CPU backends, in the order tried: fbgemm's x86 kernels (VNNI), and oneDNN's
(which also uses AMX's int8 tiles on the Xeons that have them: 1.5-2x x86's kernels there)."""

_engine_lock = threading.Lock()


def int8_engines() -> tuple[str, ...]:
    """The `INT8_ENGINES` this torch build has."""
    supported = set(torch.backends.quantized.supported_engines)
    return tuple(engine for engine in INT8_ENGINES if engine in supported)


def quantize_int8(module: nn.Module, *, engine: str = "x86", keep_float32: tuple[str, ...] = ()) -> nn.Module:
    """``module`` with its ``nn.Linear`` layers dynamically quantised to int8 (in place): weights
    per output channel (a scale per row, which halves the deviation of per-tensor scales on
    JoyTag), activations per batch, packed for ``engine`` (see `INT8_ENGINES`; the packed weight
    remembers its engine, so torch's process-wide engine setting is only changed while packing).

    Layers named in ``keep_float32`` (a qualified name or its last parts, e.g. ``head`` or
    ``vision_model.head.mlp.fc2``) stay float32: a family's output layers, whose rounding would go
    straight into its scores and embeddings.

    ``torch.ao.quantization.quantize_dynamic``: deprecated in favour of torchao, whose int8
    configurations run eagerly on the CPU no faster than float32 with torch 2.13 (they are meant
    for ``torch.compile``; docs/analyze.md); the deprecation warnings are silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {name: per_channel_dynamic_qconfig for name, layer in module.named_modules()
                if type(layer) is nn.Linear and not _named(name, keep_float32)}
        with _engine_lock:
            saved = torch.backends.quantized.engine
            torch.backends.quantized.engine = engine
            try:
                return quantize_dynamic(module, spec, dtype=torch.qint8, inplace=True)
            finally:
                torch.backends.quantized.engine = saved


def _named(name: str, names: tuple[str, ...]) -> bool:
    return any(name == wanted or name.endswith("." + wanted) for wanted in names)


def feed_seq_first(module: nn.Module) -> int:
    """Give every batch-first ``nn.MultiheadAttention`` in ``module`` its inputs laid out
    sequence-first in memory (a forward pre-hook, registered once; same shapes and values, see
    the module doc); the count."""
    count = 0
    for child in module.modules():
        if isinstance(child, nn.MultiheadAttention) and child.batch_first:
            if _seq_first_inputs not in child._forward_pre_hooks.values():
                child.register_forward_pre_hook(_seq_first_inputs)
            count += 1
    return count


def _seq_first_inputs(module: nn.Module, args: tuple) -> tuple:
    """(batch, sequence, features) inputs as views of sequence-first copies; a tensor passed twice
    (SigLIP's key and value) stays one tensor, so attention still projects it once."""
    laid_out: dict[int, torch.Tensor] = {}

    def seq_first(x: torch.Tensor) -> torch.Tensor:
        if id(x) not in laid_out:
            laid_out[id(x)] = x.transpose(0, 1).contiguous().transpose(0, 1)
        return laid_out[id(x)]

    return tuple(seq_first(a) if isinstance(a, torch.Tensor) and a.dim() == 3 else a for a in args)


def _replace(module: nn.Module, wanted, make) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if wanted(child):
            setattr(module, name, make(child))
            count += 1
        else:
            count += _replace(child, wanted, make)
    return count
