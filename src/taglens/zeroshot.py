"""Zero-shot classification and embeddings with SigLIP or CLIP: the Python API and the engine job.

    from taglens.zeroshot import Embedder, ZeroShotClassifier

    embedder = Embedder.from_pretrained()                     # google/siglip-so400m-patch14-224
    vectors = embedder.embed_images(["a.jpg", "b.png"])       # (2, D) float32, unit rows
    queries = embedder.embed_texts(["a red car"])             # (1, D) float32, unit rows
    probability = embedder.text_probability(vectors @ queries.T)   # SigLIP only

    classifier = ZeroShotClassifier(embedder)                 # shares the loaded model
    for record in classifier.classify(["a.jpg", "b.png"], ["a cat", "a plane"], top_k=1):
        print(record.path, record.error or record.labels)

**Interface other parts rely on** (the library and search, the combined analyze pass, the HTTP
service):

- `Embedder.from_pretrained(model=..., revision=None, device="auto", dtype="float32")`;
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
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from taglens.engine import EngineOptions, run
from taglens.errors import ImageDecodeError, LabelsError
from taglens.io.decode import ImageSource
from taglens.models.hf_preprocess import ImageTransform
from taglens.models.siglip import DEFAULT_MODEL, ImageTextModel, Kind, load
from taglens.records import LabelScore, Record

DEFAULT_TEMPLATE = "This is a photo of {}."
DEFAULT_TEMPLATES: tuple[str, ...] = (DEFAULT_TEMPLATE,)
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
        model: str | os.PathLike = DEFAULT_MODEL,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        tf32: bool = False,
    ) -> Embedder:
        """Load any SigLIP, fixed-resolution SigLIP 2 or CLIP checkpoint by hub id or folder
        (``tf32``: let float32 CUDA matmuls use TF32, see `taglens.engine.placement`)."""
        return cls(load(model, revision, device=device, dtype=dtype, tf32=tf32))

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

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every label set: (B, C, H, W) -> (B, D) unit embeddings."""
        return self.model.encode_images(pixels)

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
        model: str | os.PathLike = DEFAULT_MODEL,
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
