"""Device and precision choices, made once and shared by every model family.

`Placement` says where a model runs and in which dtype; families use it to move their module
and each pixel batch, so the CUDA habits (pinned host memory, non-blocking copies) live here
once. Scores are always computed from float32 logits, whatever the model's dtype.

float32 means IEEE float32: making a placement turns TF32 off for CUDA matmuls and cuDNN
convolutions (torch turns it on for convolutions by default, which would compute JoyTag's stem
and every patch embedding with a 10-bit mantissa, ~1e-3 relative). ``tf32=True`` opts in.
These are torch's process-wide switches: the last placement made decides them.

On the CPU the placement also chooses how float32 Linear layers run (`Placement.module`): through
oneDNN with prepacked float32 weights where `taglens.engine.cpu_probe` measured it faster on this
machine and within 1e-5 of torch's default, else torch's default (`taglens.engine.cpu_routes`).
The choice is logged (``--verbose``) and kept on the module as ``matmul_route``. ``int8`` is
float32 with the Linear layers dynamically quantised to int8 (CPU only, opt-in), on the int8
engine the probe measured fastest, the family's output layers kept float32. Batch-first
``nn.MultiheadAttention`` layers get their inputs laid out sequence-first
(`cpu_routes.feed_seq_first`: without it torch copies SigLIP's pooling-head weight once per
token on the CPU). Resolving a CPU
placement sizes torch's intra-op threads with the decode threads (`taglens.engine.threads`).

torch is imported when a placement is resolved, not with this module, so the model families'
configurations (and the commands that only show them) load without it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taglens.engine.transfer import ByteBatch, transfer_for

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16", "int8")
"""What ``--dtype`` accepts everywhere (commands, server settings, Python API)."""

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible, else the CPU; ``cuda`` without a GPU is an error."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA GPU is visible to PyTorch")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """The torch dtype of the model's tensors (``int8``: float32, its Linear layers quantised)."""
    import torch

    if dtype == "int8":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return getattr(torch, dtype)
    else:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}") from None


def set_tf32(enabled: bool) -> None:
    """torch's switches for TF32 in CUDA matmuls and cuDNN convolutions (readable on any build)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> tuple[bool, bool]:
    """(CUDA matmuls, cuDNN convolutions) may use TF32."""
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


@dataclass(frozen=True)
class Placement:
    """Where a model runs, in which dtype, whether float32 work may use TF32 on CUDA, and whether
    the Linear layers are dynamically quantised to int8 (``dtype`` is then float32)."""

    device: torch.device
    dtype: torch.dtype
    tf32: bool = False
    int8: bool = False

    @classmethod
    def resolve(cls, device: str | torch.device = "auto", dtype: str | torch.dtype = "float32", *,
                tf32: bool = False) -> Placement:
        """The placement, with torch's TF32 switches set to match (off unless ``tf32``)."""
        from taglens.engine import threads

        placement = cls(resolve_device(device), resolve_dtype(dtype), bool(tf32), int8=dtype == "int8")
        if placement.int8 and placement.device.type != "cpu":
            raise ValueError(f"dtype int8 runs on the CPU only, not on {placement.device}; "
                             "use bfloat16 or float16 there")
        set_tf32(placement.tf32)
        threads.apply_torch_threads(placement.device.type)
        return placement

    def module(self, module: torch.nn.Module, *, keep_float32: tuple[str, ...] = ()) -> torch.nn.Module:
        """Move a module here, in eval mode with gradients off, its Linear layers on this CPU's
        route (see the module doc); ``keep_float32``: the Linear layers that int8 leaves float32
        (a family's output layers, `taglens.engine.cpu_routes.quantize_int8`)."""
        module = module.to(device=self.device, dtype=self.dtype).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        if self.device.type == "cpu":  # frozen weights send batch-first attention down a copying path
            from taglens.engine import cpu_routes

            cpu_routes.feed_seq_first(module)
        route = self._route(module, keep_float32)
        log.info("matmul route for %s: %s", type(module).__name__, route)
        module.matmul_route = route
        return module

    def _route(self, module: torch.nn.Module, keep_float32: tuple[str, ...]) -> str:
        import torch

        from taglens.engine import cpu_probe, cpu_routes

        if self.device.type != "cpu":
            return f"torch default ({self.device.type}, {str(self.dtype).removeprefix('torch.')})"
        if self.int8:
            offer = cpu_probe.int8_offer()
            if offer.chosen != "int8":
                _say_int8_is_slower(offer.line())
            engine = cpu_probe.int8_engine(offer)
            count = sum(cpu_routes.linear_shapes(module).values())
            cpu_routes.quantize_int8(module, engine=engine, keep_float32=keep_float32)
            kept = sum(cpu_routes.linear_shapes(module).values())
            return (f"dynamic int8 on torch's {engine} engine ({count - kept} Linear layers, {kept} output layers "
                    f"kept float32; {offer.line()})")
        if self.dtype != torch.float32:
            return f"torch default (cpu, {str(self.dtype).removeprefix('torch.')})"
        shapes = cpu_routes.linear_shapes(module)
        if not shapes or not cpu_routes.onednn_available():
            return "torch default float32 (no oneDNN Linear route)"
        decision = cpu_probe.float32_route(shapes)
        if decision.chosen == "onednn":
            count = cpu_routes.use_onednn(module)
            return f"oneDNN float32, prepacked weights ({count} Linear layers; {decision.line()})"
        return f"torch default float32 ({decision.line()})"

    def batch(self, pixels: np.ndarray | ByteBatch, *, channels_last: bool = False) -> torch.Tensor:
        """A (B, C, H, W) float32 array, or a uint8 `ByteBatch` normalised on the device (bit for
        bit as on the host, see `taglens.engine.transfer`), as a tensor in the model's dtype;
        ``channels_last`` for a convolutional model kept in that layout (the gather makes it free)."""
        import torch

        if isinstance(pixels, ByteBatch):
            return transfer_for(self.device).normalised(pixels, channels_last=channels_last).to(self.dtype)
        if channels_last:
            return self.batch(pixels).contiguous(memory_format=torch.channels_last)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.dtype)


@functools.cache
def _say_int8_is_slower(why: str) -> None:
    """Once per process, however many models load in int8."""
    log.warning("int8 is not faster than bfloat16 on this CPU (%s): --dtype bfloat16 is the faster "
                "approximate mode here", why)


class CompiledForward:
    """A tensor -> tensor forward pass compiled by ``torch.compile`` (inductor, weight freezing).

    On this project's 2-core CPU it ran a ViT-B about 1.3x faster in float32 and 2.4x in
    bfloat16 than eager, at a cost of ~30 s of compiling per model and input shape: worth it for
    long runs and the server, not for ten images (see docs/analyze.md). Batches are padded to
    the next power of two, so a run compiles at most log2(largest batch) + 1 shapes instead of
    one more for its last, partial batch. Freezing is inductor's global setting; it is switched
    on only when something asks to compile.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module | None = None):
        """``module``: the network ``forward`` runs (default: ``forward`` itself, when a module);
        its oneDNN Linear layers go back to plain ones, which inductor packs its own way."""
        import torch
        import torch._inductor.config as inductor_config

        from taglens.engine.cpu_routes import use_default

        module = module if module is not None else forward if isinstance(forward, torch.nn.Module) else None
        if module is not None and use_default(module):
            module.matmul_route = "torch.compile (inductor)"

        inductor_config.freezing = True
        self._compiled = torch.compile(forward, dynamic=False)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch

        batch = pixels.shape[0]
        padded = 1 << max(batch - 1, 0).bit_length()
        if padded != batch:
            pixels = torch.cat([pixels, pixels[-1:].expand(padded - batch, *pixels.shape[1:])])
        return self._compiled(pixels)[:batch]
