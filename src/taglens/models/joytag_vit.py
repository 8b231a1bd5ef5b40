"""JoyTag's network, written from its published facts: its architecture config, blocks, model and
strict checkpoint loading (the family around it, with its config as data, is `taglens.models.joytag`).

References:
  - code: github.com/fpgaminer/joytag, ``Models.py`` class ``ViT`` (commit ce0c4a4, 2024-05-18)
  - weights: ``fancyfeast/joytag`` on the Hugging Face hub (config.json, model.safetensors,
    top_tags.txt; 5813 tags, 448 px, 91.5M parameters)
  - tests/fixtures/joytag-tiny: outputs of the reference code that this file reproduces stage
    by stage (stem, tokens, each block, final norm, pooled, logits)

The released model is not a textbook ViT:

    image (B, 3, S, S)
      -> CNN stem: [3x3 stride-2 conv, channel LayerNorm, ReLU] x 4, 1x1 conv  -> (B, D, S/16, S/16)
      -> tokens, row-major, plus fixed 2-D sin-cos positions (no CLS token)   -> (B, T, D)
      -> N pre-norm blocks: x + ls1 * attn(ln1(x)), x + ls2 * mlp(ln2(x))      (fused qkv,
         per-channel layer scale, exact erf GELU, LayerNorm eps 1e-5)
      -> final LayerNorm, mean over tokens, linear head                     -> (B, n_tags) logits

Module names follow the checkpoint's keys, so loading is a strict ``load_state_dict`` after
`checkpoint_filter`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taglens.errors import CheckpointError

CONFIG_FILE, WEIGHTS_FILE, TAGS_FILE = "config.json", "model.safetensors", "top_tags.txt"
LN_EPS = 1e-5  # torch's LayerNorm default, which the reference uses everywhere
# Older checkpoints carried 3 rating and 6 score outputs after the tags.
EXTRA_HEAD_ROWS = 9


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StemLayer:
    """One entry of the ``cnn_stem`` string: ``conv:c=64,s=2,k=3,p=1``, ``ln``, ``relu``, ``gelu``, ``bn``."""

    kind: str
    channels: int = 0
    kernel: int = 3
    stride: int = 2
    padding: int = 1


def parse_cnn_stem(spec: str) -> tuple[StemLayer, ...]:
    """``"conv:c=64;ln;relu;...;conv:c=768,s=1,k=1,p=0"`` -> layers (conv defaults k=3, s=2, p=1)."""
    layers = []
    for item in spec.split(";"):
        kind, _, opts = item.strip().partition(":")
        values: dict[str, int] = {}
        for opt in filter(None, opts.split(",")):
            key, sep, value = opt.partition("=")
            if not sep or key not in ("c", "k", "s", "p"):
                raise ValueError(f"bad cnn_stem option {opt!r} in {item!r}")
            values[key] = int(value)
        if kind == "conv":
            if "c" not in values:
                raise ValueError(f"cnn_stem conv without c= in {item!r}")
            layers.append(StemLayer("conv", values["c"], values.get("k", 3), values.get("s", 2), values.get("p", 1)))
        elif kind in ("ln", "bn", "relu", "gelu") and not values:
            layers.append(StemLayer(kind))
        else:
            raise ValueError(f"unknown cnn_stem layer {item!r}")
    if not layers or layers[0].kind != "conv":
        raise ValueError("cnn_stem must start with a conv layer")
    return tuple(layers)


@dataclass(frozen=True)
class JoyTagConfig:
    """The constructor arguments, as config.json holds them (``class`` must be ``ViT``).

    Training-only keys (``stochdepth_rate``, ``loss_type``, ``layerscale_init``, ``patch_dropout``)
    are accepted and ignored: inference uses every patch and no stochastic depth.
    """

    n_tags: int
    image_size: int
    num_blocks: int
    patch_size: int
    d_model: int
    mlp_dim: int
    num_heads: int
    use_sine: bool = True
    cnn_stem: tuple[StemLayer, ...] | None = None
    head_mean_after: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> JoyTagConfig:
        if config.get("class") != "ViT":
            raise ValueError(f"class is {config.get('class')!r}; taglens reads JoyTag's 'ViT' checkpoints")
        ignored = {"class", "stochdepth_rate", "loss_type", "layerscale_init", "patch_dropout"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known - ignored)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        values = {k: v for k, v in config.items() if k in known}
        required = ("n_tags", "image_size", "num_blocks", "patch_size", "d_model", "mlp_dim", "num_heads")
        missing = [k for k in required if k not in values]
        if missing:
            raise ValueError(f"missing keys {missing}")
        for key in required:
            if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1:
                raise ValueError(f"{key} must be a positive integer, not {values[key]!r}")
        if values["d_model"] % values["num_heads"]:
            raise ValueError("d_model must be divisible by num_heads")
        if values.get("use_sine", True) and values["d_model"] % 4:
            raise ValueError("d_model must be divisible by 4 for sin-cos positions")
        if values.get("cnn_stem") is not None:
            values["cnn_stem"] = parse_cnn_stem(values["cnn_stem"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> JoyTagConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; a JoyTag checkpoint folder holds {CONFIG_FILE}, "
                                  f"{WEIGHTS_FILE} and {TAGS_FILE}") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: not a JSON object")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a JoyTag config: {exc}") from None

    @property
    def grid(self) -> int:
        """Tokens per side: the stem (or patch conv) downsamples by ``patch_size``."""
        return self.image_size // self.patch_size


# The released fancyfeast/joytag config.json, for building the full-size model without the file.
RELEASED_CONFIG = {
    "class": "ViT",
    "num_blocks": 12,
    "patch_size": 16,
    "d_model": 768,
    "mlp_dim": 3072,
    "num_heads": 12,
    "stochdepth_rate": 0.05,
    "use_sine": True,
    "cnn_stem": "conv:c=64;ln;relu;conv:c=128;ln;relu;conv:c=256;ln;relu;conv:c=512;ln;relu;conv:c=768,s=1,k=1,p=0",
    "image_size": 448,
    "n_tags": 5813,
    "loss_type": "focal2",
}


# ----------------------------------------------------------------------------- blocks


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, at every pixel."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> norm -> back; a channels_last map permutes for free
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CnnStem(nn.Module):
    """The convolutional stem that replaces ViT's patch embedding (keys ``conv.<index>.*``)."""

    def __init__(self, layers: tuple[StemLayer, ...]):
        super().__init__()
        modules: list[nn.Module] = []
        channels = 3
        for layer in layers:
            if layer.kind == "conv":
                modules.append(nn.Conv2d(channels, layer.channels, layer.kernel, layer.stride, layer.padding))
                channels = layer.channels
            elif layer.kind == "ln":
                modules.append(ChannelLayerNorm(channels))
            elif layer.kind == "bn":
                modules.append(nn.BatchNorm2d(channels))
            elif layer.kind == "relu":
                modules.append(nn.ReLU())
            else:
                modules.append(nn.GELU())
        self.conv = nn.Sequential(*modules)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, 3, S, S) -> (B, D, S/16, S/16)


@functools.lru_cache(maxsize=16)
def sincos_positions(height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2-D positions, (height * width, dim), row-major like the tokens.

    Each quarter of the channels holds one of sin(x w), cos(x w), sin(y w), cos(y w), in that
    order, with frequencies w_i = 1 / 10000 ** (i / (dim/4 - 1)), i = 0 .. dim/4 - 1. Computed
    in float32 and then cast, as the reference does.
    """
    quarter = dim // 4
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, safe to cache and share
        omega = torch.arange(quarter, device=device, dtype=torch.float32) / (quarter - 1)
        omega = 1.0 / (10000 ** omega)
        y, x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
        y = y.flatten()[:, None] * omega[None, :]  # (T, dim/4)
        x = x.flatten()[:, None] * omega[None, :]
        return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)


class LayerScale(nn.Module):
    """A learned per-channel gain on a residual branch (key ``skip``)."""

    def __init__(self, dim: int, init: float = 0.1):
        super().__init__()
        self.skip = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.skip


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-norm transformer block with fused qkv and layer scale on both branches."""

    def __init__(self, config: JoyTagConfig):
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(d, eps=LN_EPS)
        self.qkv_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.skip_init1 = LayerScale(d)
        self.norm2 = nn.LayerNorm(d, eps=LN_EPS)
        self.mlp = Mlp(d, config.mlp_dim)
        self.skip_init2 = LayerScale(d)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv_proj(x).view(B, T, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.skip_init1(self.attention(self.norm1(x)))
        x = x + self.skip_init2(self.mlp(self.norm2(x)))
        return x


class LearnedPositions(nn.Module):
    """Learned positions for ``use_sine: false`` checkpoints (key ``embedding.weight``)."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(tokens, dim)


# ----------------------------------------------------------------------------- the model


class JoyTag(nn.Module):
    """JoyTag's ``ViT``: CNN stem, sin-cos positions, pre-norm blocks, final norm, mean pool, head."""

    def __init__(self, config: JoyTagConfig):
        super().__init__()
        self.config = config
        if config.cnn_stem is not None:
            self.patch_embeddings: nn.Module = CnnStem(config.cnn_stem)
            if self.patch_embeddings.out_channels != config.d_model:
                raise ValueError(f"cnn_stem ends with {self.patch_embeddings.out_channels} channels, "
                                 f"d_model is {config.d_model}")
        else:
            self.patch_embeddings = nn.Conv2d(3, config.d_model, config.patch_size, config.patch_size)
        if not config.use_sine:
            self.pos_embedding = LearnedPositions(config.grid ** 2, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        self.norm = nn.LayerNorm(config.d_model, eps=LN_EPS)
        self.head = nn.Linear(config.d_model, config.n_tags)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output (B, D, h, w) -> row-major tokens with positions added, (B, h*w, D)."""
        B, D, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        if self.config.use_sine:
            # under torch.compile the table is traced (and frozen into a constant), not cached
            positions = sincos_positions.__wrapped__ if torch.compiler.is_compiling() else sincos_positions
            return x + positions(h, w, D, x.device, x.dtype)
        return x + self.pos_embedding.embedding.weight[: h * w]

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, T, D) tokens after the final norm."""
        x = self.tokens(self.patch_embeddings(self._check(pixels)))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, n_tags) logits, or the pooled (B, D) embedding when ``pre_logits``."""
        if self.config.head_mean_after and not pre_logits:
            return self.head(x).mean(dim=1)
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(pixels))

    def forward_intermediates(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output, for pinpointing a mismatch: ``stem`` (B, D, h, w), ``tokens``
        (with positions), ``block0`` ... ``block{N-1}``, ``final_norm`` (B, T, D), ``pooled``
        (B, D) and ``logits`` (B, n_tags)."""
        out: dict[str, torch.Tensor] = {}
        x = out["stem"] = self.patch_embeddings(self._check(pixels))
        x = out["tokens"] = self.tokens(x)
        for i, block in enumerate(self.blocks):
            x = out[f"block{i}"] = block(x)
        x = out["final_norm"] = self.norm(x)
        out["pooled"] = self.forward_head(x, pre_logits=True)
        out["logits"] = self.forward_head(x)
        return out

    def _check(self, pixels: torch.Tensor) -> torch.Tensor:
        B, C, H, W = pixels.shape
        p = self.config.patch_size
        assert C == 3 and H % p == 0 and W % p == 0, f"input {tuple(pixels.shape)}: need 3 channels, sides divisible by {p}"
        return pixels


# ----------------------------------------------------------------------------- checkpoints


def expected_shapes(config: JoyTagConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name a checkpoint for ``config`` must hold, with its shape (no weights built)."""
    with torch.device("meta"):
        model = JoyTag(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def checkpoint_filter(state_dict: dict[str, torch.Tensor], config: JoyTagConfig) -> dict[str, torch.Tensor]:
    """A released-layout state dict -> exactly the tensors `JoyTag` loads, checked name by name.

    A head with ``n_tags + 9`` rows (older checkpoints: 3 rating and 6 score outputs after the
    tags) keeps its first ``n_tags`` rows. The learned-position checkpoints' ``position_ids``
    buffer is dropped. Raises ValueError naming every missing, unexpected or misshapen tensor.
    """
    expected = expected_shapes(config)
    out = {k: v for k, v in state_dict.items() if k != "pos_embedding.position_ids"}
    for key in ("head.weight", "head.bias"):
        if key in out and out[key].ndim >= 1 and out[key].shape[0] == config.n_tags + EXTRA_HEAD_ROWS:
            out[key] = out[key][: config.n_tags]
    missing = [k for k in expected if k not in out]
    unexpected = [k for k in out if k not in expected]
    misshapen = [f"{k} {tuple(out[k].shape)} (expected {expected[k]})"
                 for k in expected if k in out and tuple(out[k].shape) != expected[k]]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if names:
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError("; ".join(problems))
    return {k: out[k] for k in expected}


def load_tags(folder: str | Path, n_tags: int | None = None) -> tuple[str, ...]:
    """Tag names from ``top_tags.txt``, one per line, blank lines skipped, names unchanged."""
    path = Path(folder) / TAGS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; JoyTag's tag names are read from it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    tags = tuple(line.strip() for line in text.splitlines() if line.strip())
    if n_tags is not None and len(tags) != n_tags:
        raise CheckpointError(f"{path}: {len(tags)} tags, but {CONFIG_FILE} says n_tags = {n_tags}")
    return tags


def load_model(folder: str | Path, config: JoyTagConfig | None = None) -> JoyTag:
    """Build the model from ``config.json`` and load ``model.safetensors`` strictly (float32, CPU, eval)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = config or JoyTagConfig.from_file(folder / CONFIG_FILE)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; JoyTag's weights are read from {WEIGHTS_FILE}")
    try:
        state_dict = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        state_dict = checkpoint_filter(state_dict, config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: does not fit {CONFIG_FILE} ({exc})") from None
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    with torch.device("meta"):
        model = JoyTag(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()
