"""The dual-encoder family: SigLIP, SigLIP 2 (fixed resolution) and CLIP, for zero-shot
classification and image/text embeddings. Its configuration as data (`CONFIG`), the loaded
checkpoint (`ImageTextModel`, made by `load_model`), the Python API (`Embedder`,
`ZeroShotClassifier`) and its engine job (`ImageTextJob`).

    from taglens.models.siglip import Embedder, ZeroShotClassifier

    embedder = Embedder.from_pretrained()                     # google/siglip-so400m-patch14-224
    vectors = embedder.embed_images(["a.jpg", "b.png"])       # (2, D) float32, unit rows
    queries = embedder.embed_texts(["a red car"])             # (1, D) float32, unit rows
    probability = embedder.text_probability(vectors @ queries.T)   # SigLIP only

    classifier = ZeroShotClassifier(embedder)                 # shares the loaded model
    for record in classifier.classify(["a.jpg", "b.png"], ["a cat", "a plane"], top_k=1):
        print(record.path, record.error or record.labels)

**Interface other parts rely on** (the library and search, the combined analyze pass, the HTTP
service):

- `Embedder.from_pretrained(model=..., revision=None, device="auto", dtype="float32", tf32=False)`;
  ``.embed_images(images) -> (N, D)`` and ``.embed_texts(texts) -> (N, D)``, float32 ndarrays
  with L2-normalised rows; ``.model_id``, ``.revision``, ``.kind`` (``"siglip"`` or
  ``"clip"``), ``.dim``; ``.logit_scale`` (already exponentiated) and ``.logit_bias`` (``None``
  for CLIP); ``.text_probability(cos)``: SigLIP's calibrated probability that a text matches
  an image, ``sigmoid(logit_scale * cos + logit_bias)`` (raises ``TypeError`` for CLIP).
- `Embedder.job(labels=None, *, templates=..., embedding=..., threshold=None, top_k=None)`:
  one engine `Job` filling ``labels`` (when labels are given) and/or ``embedding`` from ONE
  forward pass of the image tower. Its ``name`` is ``"classify"``, ``"embed"`` or
  ``"classify+embed"``. ``Record.embedding`` is a float32 1-D ndarray.

Every image goes through `taglens.engine.run`, so a bad file becomes an error record (or, in
``embed_images``, an `ImageDecodeError` naming it) and never stops the others.

**Labels and templates.** Each label is put into each template (``str.format``, default
``"This is a photo of {}."``, the transformers pipeline's default). With several templates the
label's embedding is the mean of its normalised prompt embeddings, normalised again (prompt
ensembling, as in the CLIP paper). Label embeddings are cached per loaded model, keyed by
templates and label, so a million images against the same labels encode each label once.
Results are sorted by score, highest first; ``threshold`` keeps scores >= it, ``top_k`` the
best k after that.

**The numbers** are transformers' (its model cards and its zero-shot pipeline):

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
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from taglens.engine import EngineOptions, run
from taglens.engine.placement import CompiledForward, Placement
from taglens.engine.transfer import Pending, fetch
from taglens.errors import CheckpointError, ImageDecodeError, LabelsError, PromptTruncatedWarning
from taglens.io.decode import ImageSource
from taglens.models.hf_loading import load_strict
from taglens.models.hf_preprocess import ImageTransform, load_transform
from taglens.models.hub import ResolvedModel, resolve_model
from taglens.models.registry import FamilyConfig
from taglens.records import LabelScore, Record

if TYPE_CHECKING:
    import torch

    from taglens.models.request import TaskRequest

CONFIG = FamilyConfig(
    name="siglip",
    tasks=("classify", "embed"),
    hub_id="google/siglip-so400m-patch14-224",
    summary="SigLIP so400m/14 at 224 px: an independent sigmoid probability per free-text label, "
            "1152-d image and text embeddings",
    input_size=224,
    resample="bicubic",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    license="apache-2.0",
    url="https://huggingface.co/google/siglip-so400m-patch14-224",
    template="This is a photo of {}.",
    text_length=16,
    int8_float32_layers=("vision_model.head.mlp.fc2", "text_model.head", "visual_projection", "text_projection"),
)
DEFAULT_TEMPLATES: tuple[str, ...] = (CONFIG.template,)  # type: ignore[assignment]

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

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 from `transform` (or a uint8 `ByteBatch`) -> (B, D) float32,
        L2-normalised."""
        return self.launch_images(pixels).result()

    def launch_images(self, pixels: Any) -> Pending:
        """`encode_images`, queued on the device; the host waits only at ``.result()``."""
        import torch

        forward = self.compiled or self._image_features
        with torch.inference_mode():
            return fetch(forward(self.placement.batch(pixels)).detach().float(), _unit_rows)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    def compile(self) -> None:
        """Compile the image tower with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        object.__setattr__(self, "compiled", CompiledForward(self._image_features, self.model))

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
        import torch

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


def load_model(
    model: str | os.PathLike = CONFIG.hub_id,
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
    network = placement.module(network, keep_float32=CONFIG.int8_float32_layers)
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
    return _unit_rows(features.detach().float().cpu().numpy())


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """A float32 sigmoid that neither overflows nor loses tiny probabilities."""
    x = np.asarray(x, np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


# ----------------------------------------------------------------------------- the Python API and the job

LABEL_CACHE_SIZE = 16384


class Embedder:
    """A loaded SigLIP or CLIP model that embeds images and texts and keeps a label cache."""

    def __init__(self, model: ImageTextModel, *, cache_size: int = LABEL_CACHE_SIZE):
        self.model = model
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[tuple[str, ...], str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = CONFIG.hub_id,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        tf32: bool = False,
    ) -> Embedder:
        """Load any SigLIP, fixed-resolution SigLIP 2 or CLIP checkpoint by hub id or folder
        (``tf32``: let float32 CUDA matmuls use TF32, see `taglens.engine.placement`)."""
        return cls(load_model(model, revision, device=device, dtype=dtype, tf32=tf32))

    # Identity and calibration, read by the library, the service and stored results.
    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def revision(self) -> str:
        return self.model.revision

    @property
    def kind(self) -> Kind:
        return self.model.kind

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def logit_scale(self) -> float:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> float | None:
        return self.model.logit_bias

    @property
    def transform(self) -> ImageTransform:
        return self.model.transform

    def text_probability(self, cosines: np.ndarray | float) -> np.ndarray:
        """SigLIP: ``sigmoid(logit_scale * cos + logit_bias)``, float32. CLIP: `TypeError`."""
        return self.model.text_probability(cosines)

    def embed_images(self, images: Iterable[ImageSource], *, options: EngineOptions | None = None) -> np.ndarray:
        """Images (paths, bytes, PIL images, arrays) -> (N, D) float32 unit rows, in order.

        Raises `ImageDecodeError` naming the first image that could not be embedded; use
        `records` (or `job` with `taglens.engine.run`) to get error records instead."""
        rows = []
        for record in run(images, [self.job(embedding=True)], options):
            if record.error is not None:
                raise ImageDecodeError(record.path, record.error)
            rows.append(record.embedding)
        return np.stack(rows) if rows else np.empty((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as given (no template) -> (N, D) float32 unit rows."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of texts, not one string")
        return self.model.encode_texts(texts)

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
        """(L, D) float32 unit rows for labels put into templates, each label encoded once per
        model and templates (later calls read the cache)."""
        labels, templates = check_labels(labels), check_templates(templates)
        with self._lock:
            missing = [label for label in dict.fromkeys(labels) if (templates, label) not in self._cache]
            if missing:
                fresh = self._encode_labels(missing, templates)
                for label, vector in zip(missing, fresh):
                    self._cache[(templates, label)] = vector
            rows = []
            for label in labels:
                self._cache.move_to_end((templates, label))
                rows.append(self._cache[(templates, label)])
            while len(self._cache) > max(self.cache_size, len(labels)):
                self._cache.popitem(last=False)
        return np.stack(rows)

    def _encode_labels(self, labels: list[str], templates: tuple[str, ...]) -> np.ndarray:
        prompts = [template.format(label) for label in labels for template in templates]
        vectors = self.model.encode_texts(prompts).reshape(len(labels), len(templates), -1)
        if len(templates) == 1:
            return vectors[:, 0]
        mean = vectors.mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(np.float32)

    def compile(self) -> None:
        """Compile the image tower (``torch.compile``; see `taglens.engine.placement.CompiledForward`)."""
        self.model.compile()

    def job(
        self,
        labels: Sequence[str] | None = None,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        embedding: bool | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
    ) -> ImageTextJob:
        """One engine job: ``labels`` scored against each image and/or its ``embedding``, from
        one image-tower pass. ``embedding`` defaults to True when no labels are given."""
        if embedding is None:
            embedding = labels is None
        if labels is None and not embedding:
            raise LabelsError("a job needs labels, an embedding, or both")
        if top_k is not None and top_k < 1:
            raise LabelsError("top_k must be at least 1")
        table = None
        if labels is not None:
            labels = tuple(dict.fromkeys(check_labels(labels)))
            table = self.label_embeddings(labels, templates)
        return ImageTextJob(self.model, labels, table, embedding=embedding, threshold=threshold, top_k=top_k)

    def records(self, images: Iterable[ImageSource], *, options: EngineOptions | None = None,
                **job_options: Any) -> Iterator[Record]:
        """One `Record` per image, in order, errors as records; ``job_options`` are `job`'s
        arguments (default: embeddings only)."""
        return run(images, [self.job(**job_options)], options)


class ImageTextJob:
    """The engine job of this family: image embeddings, then label scores from them."""

    def __init__(
        self,
        model: ImageTextModel,
        labels: tuple[str, ...] | None,
        label_embeddings: np.ndarray | None,
        *,
        embedding: bool,
        threshold: float | None = None,
        top_k: int | None = None,
    ):
        self.model = model
        self.labels = labels
        self.label_embeddings = label_embeddings
        self.embedding = embedding
        self.threshold = threshold
        self.top_k = top_k
        self.name = "+".join(n for n, on in (("classify", labels is not None), ("embed", embedding)) if on)
        self.transform = model.transform
        self.model_id = model.model_id
        self.revision = model.revision

    @property
    def forward_key(self) -> ImageTextModel:
        """Jobs with the same key share one forward pass (see `forward` / `finish`)."""
        return self.model

    takes_bytes = True
    """Its inputs may come as uint8 `ByteBatch`es, normalised on the model's device."""

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every label set: (B, C, H, W) -> (B, D) unit embeddings."""
        return self.model.encode_images(pixels)

    def launch(self, pixels: Any) -> Pending:
        """`forward` queued on the device (the engine waits for it after every model's pass)."""
        return self.model.launch_images(pixels)

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self.finish(self.forward(pixels))

    def finish(self, embeddings: np.ndarray) -> list[dict[str, Any]]:
        """This job's part: rows of `forward`'s embeddings -> label scores and/or the embedding."""
        out: list[dict[str, Any]] = [{} for _ in range(len(embeddings))]
        if self.labels is not None:
            scores = self.model.scores(embeddings, self.label_embeddings)  # type: ignore[arg-type]
            for fields, row in zip(out, scores):
                fields["labels"] = rank(self.labels, row, threshold=self.threshold, top_k=self.top_k)
        if self.embedding:
            for fields, vector in zip(out, embeddings):
                fields["embedding"] = vector.copy()
        return out


class ZeroShotClassifier:
    """Scores images against free-text labels: SigLIP an independent probability per label,
    CLIP a softmax over the labels. Wraps an `Embedder` (whose model and label cache it shares)."""

    def __init__(self, embedder: Embedder, templates: Sequence[str] = DEFAULT_TEMPLATES):
        self.embedder = embedder
        self.templates = check_templates(templates)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = CONFIG.hub_id,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        tf32: bool = False,
    ) -> ZeroShotClassifier:
        return cls(Embedder.from_pretrained(model, revision, device, dtype, tf32), templates)

    def job(self, labels: Sequence[str], *, threshold: float | None = None, top_k: int | None = None,
            embedding: bool = False) -> ImageTextJob:
        return self.embedder.job(labels, templates=self.templates, embedding=embedding, threshold=threshold,
                                 top_k=top_k)

    def classify(
        self,
        images: Iterable[ImageSource],
        labels: Sequence[str],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        options: EngineOptions | None = None,
    ) -> Iterator[Record]:
        """One `Record` per image, in order: ``labels`` sorted by score, or ``error``."""
        return run(images, [self.job(labels, threshold=threshold, top_k=top_k)], options)


def rank(labels: Sequence[str], scores: np.ndarray, *, threshold: float | None = None,
         top_k: int | None = None) -> tuple[LabelScore, ...]:
    """Labels with their scores, highest first (ties keep label order), filtered."""
    ranked = sorted(zip(labels, (float(s) for s in scores)), key=lambda pair: -pair[1])
    if threshold is not None:
        ranked = [pair for pair in ranked if pair[1] >= threshold]
    if top_k is not None:
        ranked = ranked[:top_k]
    return tuple(LabelScore(label, score) for label, score in ranked)


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise LabelsError("labels must be a list of strings, not one string")
    labels = tuple(labels)
    if not labels:
        raise LabelsError("no labels given")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise LabelsError(f"every label must be a non-empty string, got {label!r}")
    return labels


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise LabelsError("no templates given")
    for template in templates:
        if "{}" not in template:
            raise LabelsError(f"template {template!r} has no '{{}}' where the label goes")
        try:
            template.format("label")
        except (IndexError, KeyError, ValueError) as exc:
            raise LabelsError(f"template {template!r} is not a format string with one '{{}}' ({exc})") from None
    return templates


# ----------------------------------------------------------------------------- the family's interface


def load(model: str | os.PathLike = CONFIG.hub_id, revision: str | None = None, *, device: str = "auto",
         dtype: str = "float32", tf32: bool = False) -> Embedder:
    """The loaded family, shared by every job made from it (`taglens.models.modelset.ModelSet`)."""
    return Embedder.from_pretrained(model, revision, device=device, dtype=dtype, tf32=tf32)


def job_for(embedder: Embedder, request: TaskRequest) -> ImageTextJob:
    """The ``classify`` and/or ``embed`` job of a request, from one image-tower pass."""
    classify = "classify" in request.tasks
    return embedder.job(list(request.labels) if classify else None, templates=request.templates or DEFAULT_TEMPLATES,
                        embedding="embed" in request.tasks, threshold=request.classify_threshold,
                        top_k=request.classify_top_k)
