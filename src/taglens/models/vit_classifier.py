"""The image-classifier family, used for NSFW detection: any transformers image classifier (ViT,
ConvNeXt, Swin, ...). Its configuration as data (`CONFIG`), the loaded classifier
(`ImageClassifier`), the NSFW rule and policy (`NsfwDetector`, `NsfwJob`, `unsafe_score`).

The default is ``Falconsai/nsfw_image_detection`` (ViT-B/16 at 224 px, labels ``normal`` /
``nsfw``), but nothing here is specific to it: the labels come from ``config.id2label``, the
preprocessing from the image processor transformers resolves for the folder
(`taglens.models.hf_preprocess`, bit-identical to it), and the activation from the config exactly as
transformers' image-classification pipeline chooses it (`activation_for`). Logits are always
taken to float32 before the activation, whatever dtype the model runs in.

**NSFW.** `NsfwDetector` is the Python twin of ``taglens nsfw``; its `job` is what the command,
the combined ``analyze`` pass and the library feed to `taglens.engine.run`. The rule, in one place:

- ``scores`` holds every label's score (softmax over the labels, or a sigmoid per label for a
  multi-label checkpoint: see `taglens.models.vit_classifier.activation_for`);
- ``label`` / ``score`` are the top label and its score (the first label wins a tie, as in
  transformers' pipeline);
- ``flagged`` is true when **any** positive label's score is **at or above** the threshold
  (``>=``; default 0.5, so on a two-label softmax checkpoint a file is flagged exactly when
  ``nsfw`` scores at least as high as ``normal``). Each positive label is judged on its own
  score; with a softmax checkpoint whose positive classes split the mass (e.g. porn 0.3,
  hentai 0.3), lower the threshold if that case should count.

The library's policy for classifiers without an ``nsfw`` label (``porn``/``hentai``/``sexy``
checkpoints) lives here too: such a classifier is flagged by its labels that are not safe ones
(`SAFE_LABELS`), and `unsafe_score` is the one number search's ``max_nsfw`` compares.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from taglens.engine import EngineOptions, run
from taglens.engine.placement import CompiledForward, Placement
from taglens.engine.transfer import Pending, fetch
from taglens.errors import CheckpointError, UnknownLabelError
from taglens.io.decode import ImageSource, is_single_source
from taglens.models.hf_loading import load_strict
from taglens.models.hf_preprocess import ImageTransform, load_transform
from taglens.models.hub import ResolvedModel, resolve_model
from taglens.models.registry import FamilyConfig
from taglens.records import NsfwResult, Record

if TYPE_CHECKING:
    import torch

    from taglens.models.request import TaskRequest

CONFIG = FamilyConfig(
    name="vit_classifier",
    tasks=("nsfw",),
    hub_id="Falconsai/nsfw_image_detection",
    summary="Falconsai's ViT-B/16 at 224 px, labels normal / nsfw (softmax)",
    input_size=224,
    resample="bilinear",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    license="apache-2.0",
    url="https://huggingface.co/Falconsai/nsfw_image_detection",
    threshold=0.5,
    positive_labels=("nsfw",),
    int8_float32_layers=("classifier",),
)
DEFAULT_THRESHOLD: float = CONFIG.threshold  # type: ignore[assignment]
DEFAULT_POSITIVE_LABEL = ",".join(CONFIG.positive_labels)
SAFE_LABELS = frozenset({"normal", "neutral", "safe", "sfw", "drawings"})
"""Labels that never count as NSFW, for classifiers that have no ``nsfw`` label."""

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
        model: str = CONFIG.hub_id,
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
            model=placement.module(module, keep_float32=CONFIG.int8_float32_layers),
            transform=transform,
            labels=labels,
            activation=activation_for(config),
            placement=placement,
            model_id=resolved.model_id,
            revision=resolved.revision,
        )

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 preprocessed pixels (or a uint8 `ByteBatch`) -> (B, L) float32 logits."""
        return self._launch(pixels, None).result()

    def _launch(self, pixels: Any, then: Any) -> Pending:
        import torch

        with torch.inference_mode():
            return fetch((self.compiled or self._logits)(self.placement.batch(pixels)).float(), then)

    def launch_scores(self, pixels: Any) -> Pending:
        """`scores`, queued on the device; the host waits only at ``.result()``."""
        return self._launch(pixels, lambda logits: probabilities(logits, self.activation))

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits

    def compile(self) -> None:
        """Compile the forward pass with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        object.__setattr__(self, "compiled", CompiledForward(self._logits, self.model))

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """(B, C, H, W) -> (B, L) float32 scores (softmax, sigmoid or raw, per `activation`)."""
        return probabilities(self.logits(pixels), self.activation)


# ----------------------------------------------------------------------------- NSFW: the rule and the job


def parse_labels(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"porn, hentai,sexy"`` or ``["porn", "hentai"]`` -> a tuple of stripped, non-empty names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    labels = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not labels:
        raise UnknownLabelError("no positive label given")
    return labels


def match_labels(
    requested: Sequence[str], labels: Sequence[str], *, model_id: str = "the checkpoint"
) -> tuple[int, ...]:
    """Indices of ``requested`` among ``labels``: an exact name, else a name equal ignoring case
    when exactly one label matches. An unknown name is an `UnknownLabelError` listing the labels."""
    indices = []
    for name in requested:
        if name in labels:
            indices.append(labels.index(name))
            continue
        folded = [i for i, label in enumerate(labels) if label.casefold() == name.casefold()]
        if len(folded) != 1:
            raise UnknownLabelError(
                f"{model_id} has no label {name!r}; its labels are {', '.join(repr(x) for x in labels)} "
                "(name the positive one or ones among them)"
            )
        indices.append(folded[0])
    return tuple(dict.fromkeys(indices))


@dataclass(frozen=True, eq=False)
class NsfwJob:
    """The engine job: (B, C, H, W) pixels -> ``{"nsfw": NsfwResult}`` per image."""

    classifier: ImageClassifier
    positive: tuple[int, ...]
    threshold: float
    name: str = "nsfw"

    @property
    def transform(self) -> ImageTransform:
        return self.classifier.transform

    @property
    def model_id(self) -> str:
        return self.classifier.model_id

    @property
    def revision(self) -> str:
        return self.classifier.revision

    @property
    def positive_labels(self) -> tuple[str, ...]:
        return tuple(self.classifier.labels[i] for i in self.positive)

    def result(self, scores: np.ndarray) -> NsfwResult:
        """One image's (L,) scores -> its `NsfwResult`."""
        labels = self.classifier.labels
        top = int(np.argmax(scores))
        return NsfwResult(
            label=labels[top],
            score=float(scores[top]),
            scores={label: float(s) for label, s in zip(labels, scores)},
            flagged=any(bool(scores[i] >= self.threshold) for i in self.positive),
        )

    @property
    def forward_key(self) -> ImageClassifier:
        """Jobs with the same key share one forward pass (see `forward` / `finish`)."""
        return self.classifier

    takes_bytes = True
    """Its inputs may come as uint8 `ByteBatch`es, normalised on the model's device."""

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every positive label and threshold: (B, C, H, W) -> (B, L)."""
        return self.classifier.scores(pixels)

    def launch(self, pixels: Any) -> Pending:
        """`forward` queued on the device (the engine waits for it after every model's pass)."""
        return self.classifier.launch_scores(pixels)

    def finish(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """This job's part: each row of `forward`'s scores -> its `NsfwResult`."""
        return [{"nsfw": self.result(row)} for row in scores]

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self.finish(self.forward(pixels))


class NsfwDetector:
    """An image classifier plus the positive label(s) and threshold that make ``flagged``.

    Example::

        detector = NsfwDetector.from_pretrained()        # Falconsai/nsfw_image_detection
        [record] = detector("photo.jpg")
        record.nsfw.flagged, record.nsfw.scores          # True, {"normal": 0.02, "nsfw": 0.98}
    """

    def __init__(
        self,
        classifier: ImageClassifier,
        *,
        positive_label: str | Sequence[str] = DEFAULT_POSITIVE_LABEL,
        threshold: float = DEFAULT_THRESHOLD,
    ):
        self.classifier = classifier
        self._job = self._make_job(positive_label, threshold)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = CONFIG.hub_id,
        revision: str | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
        tf32: bool = False,
        positive_label: str | Sequence[str] = DEFAULT_POSITIVE_LABEL,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> NsfwDetector:
        """Load any transformers image classifier (hub id or folder, safetensors only).

        ``positive_label`` is one label or several (a list, or ``"porn,hentai,sexy"``); a label
        the checkpoint lacks is an `UnknownLabelError` naming the labels it has.
        """
        classifier = ImageClassifier.from_pretrained(os.fspath(model), revision, device=device, dtype=dtype, tf32=tf32)
        return cls(classifier, positive_label=positive_label, threshold=threshold)

    @property
    def model_id(self) -> str:
        return self.classifier.model_id

    @property
    def revision(self) -> str:
        return self.classifier.revision

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels

    @property
    def positive_labels(self) -> tuple[str, ...]:
        return self._job.positive_labels

    @property
    def threshold(self) -> float:
        return self._job.threshold

    def compile(self) -> None:
        """Compile the classifier (``torch.compile``; see `taglens.engine.placement.CompiledForward`)."""
        self.classifier.compile()

    def job(
        self, *, positive_label: str | Sequence[str] | None = None, threshold: float | None = None
    ) -> NsfwJob:
        """The engine job named ``"nsfw"``, with this detector's rule unless overridden here."""
        if positive_label is None and threshold is None:
            return self._job
        return self._make_job(
            self.positive_labels if positive_label is None else positive_label,
            self.threshold if threshold is None else threshold,
        )

    def __call__(
        self, images: ImageSource | Iterable[ImageSource], *, options: EngineOptions | None = None
    ) -> list[Record]:
        """One `Record` per image (paths, bytes, PIL images, arrays), errors as records."""
        return list(self.iter(images, options=options))

    def iter(
        self, images: ImageSource | Iterable[ImageSource], *, options: EngineOptions | None = None
    ) -> Iterator[Record]:
        """`__call__` as a stream, for inputs too many to hold."""
        sources = [images] if is_single_source(images) else images
        return run(sources, [self._job], options)

    def _make_job(self, positive_label: str | Sequence[str], threshold: float) -> NsfwJob:
        threshold = float(threshold)
        if self.classifier.activation != "none" and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
        positive = match_labels(parse_labels(positive_label), self.classifier.labels, model_id=self.model_id)
        return NsfwJob(self.classifier, positive, threshold)


# ----------------------------------------------------------------------------- the library's NSFW policy


def unsafe_score(result: NsfwResult) -> float:
    """One number for ``--max-nsfw``: the probability of the label ``nsfw`` when the classifier has
    one (Falconsai), else the highest score among labels that are not safe ones (`SAFE_LABELS`),
    e.g. ``porn``/``hentai``/``sexy``."""
    scores = {k.lower(): float(v) for k, v in result.scores.items()}
    if "nsfw" in scores:
        return scores["nsfw"]
    unsafe = [v for k, v in scores.items() if k not in SAFE_LABELS]
    return max(unsafe, default=0.0)


def unsafe_labels(labels: Sequence[str]) -> list[str]:
    """The labels of a classifier that are not safe ones: its positive labels when it has no ``nsfw``."""
    return [label for label in labels if label.lower() not in SAFE_LABELS]


# ----------------------------------------------------------------------------- the family's interface


def load(model: str | os.PathLike = CONFIG.hub_id, revision: str | None = None, *, device: str = "auto",
         dtype: str = "float32", tf32: bool = False) -> ImageClassifier:
    """The loaded family: the classifier, shared by every NSFW rule (`taglens.models.modelset.ModelSet`)."""
    return ImageClassifier.from_pretrained(os.fspath(model), revision, device=device, dtype=dtype, tf32=tf32)


def job_for(classifier: ImageClassifier, request: TaskRequest) -> NsfwJob:
    """The ``nsfw`` job of a request: its positive labels (default `CONFIG`'s) and threshold."""
    detector = NsfwDetector(classifier, positive_label=request.positive_labels or DEFAULT_POSITIVE_LABEL,
                            threshold=DEFAULT_THRESHOLD if request.nsfw_threshold is None else request.nsfw_threshold)
    return detector.job()


def library_detector(classifier: ImageClassifier) -> NsfwDetector:
    """The detector the library indexes with: the default rule, or for a classifier without an
    ``nsfw`` label its labels that are not safe ones."""
    try:
        return NsfwDetector(classifier)
    except UnknownLabelError:
        unsafe = unsafe_labels(classifier.labels)
        if not unsafe:
            raise
        return NsfwDetector(classifier, positive_label=unsafe)
