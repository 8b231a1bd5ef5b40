"""The dual-encoder family: SigLIP, SigLIP 2 (fixed resolution) and CLIP image and text towers.

One loaded checkpoint (`ImageTextModel`, made by `load`) turns pixel batches and texts into
L2-normalised float32 embeddings, and cosines into the model's own scores, with the numbers
transformers gives (its model cards and its zero-shot pipeline):

- **Images**: the checkpoint's image processor as transformers resolves it
  (``preprocessor_config.json`` or transformers 5's ``processor_config.json``), run by
  `taglens.models.hf_preprocess` bit-identically, then ``get_image_features``.
- **Text**: the checkpoint's own tokenizer. SigLIP is padded with ``padding="max_length"`` to
  its text length, the tokenizer's ``model_max_length`` bounded by the text config's
  ``max_position_embeddings`` (16 for so400m-patch14-224, 64 for most others): its text tower
  pools the last position, so any other padding changes the scores. CLIP pools its end-of-text
  token behind a causal mask, so its padding never changes a text's features; each text is
  padded to a multiple of 16 tokens (at most 77) so its computation does not depend on the
  other texts in the batch. A text longer than the text length is truncated (its end-of-text
  token kept) with a `PromptTruncatedWarning` naming it.
- **Scores**: SigLIP ``sigmoid(exp(logit_scale) * cos + logit_bias)``, one independent
  probability per text; CLIP ``softmax(exp(logit_scale) * cos)`` over the texts, as the
  pipeline does. Always computed in float32, whatever the model's dtype.

SigLIP 2 NaFlex checkpoints (``model_type: siglip2``, variable resolution) are refused with a
`CheckpointError`: their patch-sequence inputs do not fit the fixed-size image batches here. So
is a checkpoint whose tensors do not fill both towers exactly (`taglens.models.hf_loading`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from taglens.errors import CheckpointError, PromptTruncatedWarning
from taglens.models.hub import ResolvedModel, resolve_model
from taglens.models.hf_loading import load_strict
from taglens.models.hf_preprocess import ImageTransform, load_transform
from taglens.engine.placement import CompiledForward, Placement

DEFAULT_MODEL = "google/siglip-so400m-patch14-224"
KINDS = {"siglip": "siglip", "clip": "clip"}
KIND_NAMES = {"siglip": "SigLIP", "clip": "CLIP"}
CLIP_PAD_MULTIPLE = 16
TEXT_BATCH_SIZE = 64

Kind = Literal["siglip", "clip"]


@dataclass(frozen=True, eq=False)
class ImageTextModel:
    """A loaded SigLIP or CLIP checkpoint: both towers, its image recipe and its tokenizer."""

    model: torch.nn.Module
    tokenizer: Any
    transform: ImageTransform
    placement: Placement
    kind: Kind
    model_id: str
    revision: str
    text_length: int
    dim: int
    logit_scale: float
    """``exp(logit_scale)`` of the checkpoint, the factor on cosines."""
    logit_bias: float | None
    """SigLIP's ``logit_bias``; ``None`` for CLIP."""
    compiled: CompiledForward | None = field(default=None, init=False, repr=False)
    """The image tower compiled by `compile`, else None (eager)."""

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 from `transform` -> (B, D) float32, L2-normalised."""
        forward = self.compiled or self._image_features
        return _normalise(forward(self.placement.batch(pixels)))

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    def compile(self) -> None:
        """Compile the image tower with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        object.__setattr__(self, "compiled", CompiledForward(self._image_features))

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = TEXT_BATCH_SIZE) -> np.ndarray:
        """Texts -> (N, D) float32, L2-normalised, tokenised as the model was trained."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        if not texts:
            return out
        ids = self.token_ids(texts)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            groups.setdefault(self.padded_length(len(row)), []).append(i)
        with torch.inference_mode():
            for length, members in groups.items():
                for start in range(0, len(members), batch_size):
                    chunk = members[start:start + batch_size]
                    inputs = self.tokenizer.pad(
                        {"input_ids": [ids[i] for i in chunk]}, padding="max_length", max_length=length,
                        return_tensors="pt",
                    )
                    inputs = {k: v.to(self.placement.device) for k, v in inputs.items()}
                    out[chunk] = _normalise(self.model.get_text_features(**inputs).pooler_output)
        return out

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids (special tokens included), truncated to the text length with
        the end-of-text token kept; warns once for every text that had to be cut."""
        texts = list(texts)
        probe = self.tokenizer(texts, truncation=True, max_length=self.text_length + 1)["input_ids"]
        long = [text for text, row in zip(texts, probe) if len(row) > self.text_length]
        for text in long:
            warnings.warn(
                f"prompt {text!r} is longer than the model's {self.text_length} text tokens; it was truncated",
                PromptTruncatedWarning, stacklevel=3,
            )
        if not long:
            return [list(row) for row in probe]
        return [list(row) for row in self.tokenizer(texts, truncation=True, max_length=self.text_length)["input_ids"]]

    def padded_length(self, n_tokens: int) -> int:
        """The length a text of ``n_tokens`` is padded to: SigLIP always its full text length;
        CLIP the next multiple of 16, at most its text length."""
        if self.kind == "siglip":
            return self.text_length
        return min(self.text_length, CLIP_PAD_MULTIPLE * math.ceil(max(n_tokens, 1) / CLIP_PAD_MULTIPLE))

    def logits(self, cosines: np.ndarray) -> np.ndarray:
        """Cosines -> the model's logits (float32): ``scale * cos (+ bias)``."""
        logits = np.float32(self.logit_scale) * np.asarray(cosines, np.float32)
        if self.logit_bias is not None:
            logits = logits + np.float32(self.logit_bias)
        return logits.astype(np.float32, copy=False)

    def scores(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(B, D) x (L, D) -> (B, L) scores: SigLIP sigmoids, CLIP a softmax over the L texts.

        Each image's row is its own matrix-vector product, so a row's scores are the same bits
        whatever other rows share the call (the HTTP service finishes any subset of a batch)."""
        texts = np.asarray(text_embeddings, np.float32)
        images = np.asarray(image_embeddings, np.float32).reshape(-1, texts.shape[-1])
        cosines = np.stack([texts @ row for row in images]) if len(images) else np.empty((0, len(texts)), np.float32)
        logits = self.logits(cosines)
        if self.kind == "siglip":
            return _sigmoid(logits)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)

    def text_probability(self, cosines: np.ndarray | float) -> np.ndarray:
        """SigLIP's calibrated probability that a text matches an image, from their cosine.

        CLIP has no such probability (its scores only compare texts with each other), so it
        raises `TypeError` there."""
        if self.logit_bias is None:
            raise TypeError(f"{self.model_id} is a CLIP model: it has no calibrated per-text probability")
        return _sigmoid(self.logits(np.asarray(cosines, np.float32)))


def load(
    model: str | os.PathLike = DEFAULT_MODEL,
    revision: str | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    tf32: bool = False,
) -> ImageTextModel:
    """Load a SigLIP, fixed-resolution SigLIP 2 or CLIP checkpoint by hub id or folder
    (``tf32``: let float32 CUDA matmuls use TF32, see `taglens.engine.placement`)."""
    resolved = resolve_model(model, revision)
    kind = checkpoint_kind(resolved)
    placement = Placement.resolve(device, dtype, tf32=tf32)
    transform = load_transform(resolved.folder)

    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.folder)
        network = load_strict(AutoModel, resolved.folder, model_id=resolved.model_id, what=KIND_NAMES[kind],
                              dtype=placement.dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{resolved.model_id}: could not load as a {kind} checkpoint ({exc})") from None
    network = placement.module(network)
    config = network.config
    text_length = min(int(tokenizer.model_max_length), int(config.text_config.max_position_embeddings))
    scale = float(network.logit_scale.detach().float().exp().item())
    bias = float(network.logit_bias.detach().float().item()) if kind == "siglip" else None
    dim = int(config.projection_dim if kind == "clip" else config.text_config.projection_size)
    return ImageTextModel(
        model=network, tokenizer=tokenizer, transform=transform, placement=placement, kind=kind,
        model_id=resolved.model_id, revision=resolved.revision, text_length=text_length, dim=dim,
        logit_scale=scale, logit_bias=bias,
    )


def checkpoint_kind(resolved: ResolvedModel) -> Kind:
    """``siglip`` or ``clip`` from the folder's config.json; anything else is refused."""
    path = Path(resolved.folder) / "config.json"
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{resolved.model_id}: unreadable config.json ({exc})") from None
    if model_type == "siglip2":
        raise CheckpointError(
            f"{resolved.model_id}: SigLIP 2 NaFlex (variable-resolution) checkpoints are not supported; use a "
            "fixed-resolution SigLIP 2 checkpoint such as google/siglip2-so400m-patch14-384"
        )
    if model_type not in KINDS:
        raise CheckpointError(
            f"{resolved.model_id}: model_type {model_type!r} is not a SigLIP or CLIP checkpoint "
            "(classify and embed need a dual image/text encoder)"
        )
    return KINDS[model_type]  # type: ignore[return-value]


def _normalise(features: torch.Tensor) -> np.ndarray:
    """float32 L2 normalisation (the features leave the model's dtype first)."""
    array = features.detach().float().cpu().numpy()
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """A float32 sigmoid that neither overflows nor loses tiny probabilities."""
    x = np.asarray(x, np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)
