"""NSFW detection: an image classifier's scores, and a flag from its positive label(s).

`NsfwDetector` is the Python twin of ``taglens nsfw``; its `job` is what the command, the
combined ``analyze`` pass and the library feed to `taglens.engine.run`.

The rule, in one place:

- ``scores`` holds every label's score (softmax over the labels, or a sigmoid per label for a
  multi-label checkpoint: see `taglens.models.vit_classifier.activation_for`);
- ``label`` / ``score`` are the top label and its score (the first label wins a tie, as in
  transformers' pipeline);
- ``flagged`` is true when **any** positive label's score is **at or above** the threshold
  (``>=``; default 0.5, so on a two-label softmax checkpoint a file is flagged exactly when
  ``nsfw`` scores at least as high as ``normal``). Each positive label is judged on its own
  score; with a softmax checkpoint whose positive classes split the mass (e.g. porn 0.3,
  hentai 0.3), lower the threshold if that case should count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from taglens.engine import EngineOptions, run
from taglens.errors import UnknownLabelError
from taglens.io.decode import ImageSource
from taglens.models.hf_preprocess import ImageTransform
from taglens.models.vit_classifier import DEFAULT_MODEL, ImageClassifier
from taglens.records import NsfwResult, Record

DEFAULT_THRESHOLD = 0.5
DEFAULT_POSITIVE_LABEL = "nsfw"

_SINGLE_SOURCES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)


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

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every positive label and threshold: (B, C, H, W) -> (B, L)."""
        return self.classifier.scores(pixels)

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
        model: str | os.PathLike = DEFAULT_MODEL,
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
        sources = [images] if isinstance(images, _SINGLE_SOURCES) else images
        return run(sources, [self._job], options)

    def _make_job(self, positive_label: str | Sequence[str], threshold: float) -> NsfwJob:
        threshold = float(threshold)
        if self.classifier.activation != "none" and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
        positive = match_labels(parse_labels(positive_label), self.classifier.labels, model_id=self.model_id)
        return NsfwJob(self.classifier, positive, threshold)
