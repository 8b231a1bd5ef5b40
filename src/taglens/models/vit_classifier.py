"""Any transformers image classifier (ViT, ConvNeXt, Swin, ...): load, preprocess, batched
forward, probabilities.

The default is ``Falconsai/nsfw_image_detection`` (ViT-B/16 at 224 px, labels ``normal`` /
``nsfw``), but nothing here is specific to it: the labels come from ``config.id2label``, the
preprocessing from the image processor transformers resolves for the folder
(`taglens.models.hf_preprocess`, bit-identical to it), and the activation from the config exactly as
transformers' image-classification pipeline chooses it (`activation_for`). Logits are always
taken to float32 before the activation, whatever dtype the model runs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from taglens.errors import CheckpointError
from taglens.models.hub import ResolvedModel, resolve_model
from taglens.models.hf_loading import load_strict
from taglens.models.hf_preprocess import ImageTransform, load_transform
from taglens.engine.placement import CompiledForward, Placement

DEFAULT_MODEL = "Falconsai/nsfw_image_detection"

Activation = Literal["softmax", "sigmoid", "none"]


def activation_for(config: Any) -> Activation:
    """The function transformers' image-classification pipeline applies to this config's logits
    (``ImageClassificationPipeline.postprocess``, transformers 5), in the same order of rules:

    1. ``problem_type == "regression"``: none (raw logits);
    2. ``problem_type == "multi_label_classification"`` or a single label: sigmoid per label;
    3. ``problem_type == "single_label_classification"`` or several labels: softmax;
    4. else the config's own ``function_to_apply``, else none.
    """
    problem_type = getattr(config, "problem_type", None)
    num_labels = config.num_labels
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    if problem_type == "single_label_classification" or num_labels > 1:
        return "softmax"
    declared = getattr(config, "function_to_apply", None)
    return declared if declared in ("softmax", "sigmoid", "none") else "none"


def probabilities(logits: np.ndarray, activation: Activation) -> np.ndarray:
    """(B, L) float32 logits -> (B, L) scores, computed in float64 and returned as float32."""
    x = np.asarray(logits, dtype=np.float64)
    if activation == "softmax":
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        out = shifted / shifted.sum(axis=-1, keepdims=True)
    elif activation == "sigmoid":
        with np.errstate(over="ignore"):  # exp(1000) = inf gives 1 / inf = 0, which is right
            out = 1.0 / (1.0 + np.exp(-x))
    else:
        out = x
    return out.astype(np.float32)


@dataclass(frozen=True, eq=False)
class ImageClassifier:
    """A loaded transformers image classifier, its preprocessing and its identity.

    ``labels`` are the ``id2label`` names in index order; ``activation`` is what turns logits
    into scores (see `activation_for`); ``model_id`` and ``revision`` come from `resolve_model`.
    """

    model: torch.nn.Module
    transform: ImageTransform
    labels: tuple[str, ...]
    activation: Activation
    placement: Placement
    model_id: str
    revision: str
    compiled: CompiledForward | None = field(default=None, init=False, repr=False)
    """The forward pass compiled by `compile`, else None (eager)."""

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
        tf32: bool = False,
    ) -> ImageClassifier:
        """Load a hub id or a checkpoint folder (safetensors only) onto ``device`` in ``dtype``
        (``tf32``: let float32 CUDA matmuls and convolutions use TF32, see `taglens.engine.placement`)."""
        from transformers import AutoConfig, AutoModelForImageClassification

        placement = Placement.resolve(device, dtype, tf32=tf32)
        resolved: ResolvedModel = resolve_model(model, revision)
        try:
            config = AutoConfig.from_pretrained(resolved.folder)
        except Exception as exc:
            raise CheckpointError(f"{resolved.model_id}: unreadable config.json ({exc})") from None
        if not getattr(config, "id2label", None):
            raise CheckpointError(f"{resolved.model_id}: config.json has no id2label; not a classifier")
        transform = load_transform(resolved.folder)
        try:
            # transformers fills weights the checkpoint lacks (e.g. the head of a CLIP checkpoint
            # loaded as a classifier) with random values: load_strict refuses instead.
            module = load_strict(AutoModelForImageClassification, resolved.folder, model_id=resolved.model_id,
                                 what="image-classifier", config=config)
        except ValueError as exc:  # "Unrecognized configuration class ..." for a non-classifier
            raise CheckpointError(
                f"{resolved.model_id}: not a transformers image classifier ({exc})"
            ) from None
        labels = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        return cls(
            model=placement.module(module),
            transform=transform,
            labels=labels,
            activation=activation_for(config),
            placement=placement,
            model_id=resolved.model_id,
            revision=resolved.revision,
        )

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 preprocessed pixels -> (B, L) float32 logits."""
        with torch.inference_mode():
            out = (self.compiled or self._logits)(self.placement.batch(pixels))
        return out.float().cpu().numpy()

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits

    def compile(self) -> None:
        """Compile the forward pass with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        object.__setattr__(self, "compiled", CompiledForward(self._logits))

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """(B, C, H, W) -> (B, L) float32 scores (softmax, sigmoid or raw, per `activation`)."""
        return probabilities(self.logits(pixels), self.activation)

