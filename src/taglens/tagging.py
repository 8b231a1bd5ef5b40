"""Tagging images with JoyTag: which tags to keep (`TagSelection`) and the loaded model (`Tagger`).

    tagger = Tagger.from_pretrained()                     # fancyfeast/joytag, or a folder
    records = tagger(["a.jpg", "b.png"], threshold=0.4)   # one Record per image, through the engine
    job = tagger.job(TagSelection(top_k=20))              # the engine Job, for combined passes

A tag is kept when its sigmoid score is strictly greater than its threshold (the tag's own
from a thresholds file, else the global one; default 0.4 as JoyTag's authors use), it is not
excluded, and it is among the ``top_k`` best when that is set. Kept tags are listed by score,
highest first. Scores are computed from float32 logits whatever the model's dtype.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taglens.engine import EngineOptions, run
from taglens.errors import TagSelectionError
from taglens.models.hub import resolve_model
from taglens.io.decode import ImageSource
from taglens.models.joytag import CONFIG_FILE, HUB_ID, JoyTag, JoyTagConfig, load_model, load_tags
from taglens.models.joytag_preprocess import JoyTagTransform
from taglens.records import Record, TagScore
from taglens.engine.placement import CompiledForward, Placement
from taglens.models.tagnames import TagNames

DEFAULT_THRESHOLD = 0.4


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class TagSelection:
    """Which tags a tagging run keeps.

    ``threshold``: a tag counts when its score is strictly greater (0.4 by default).
    ``thresholds``: per-tag thresholds that replace the global one (see `read_thresholds`).
    ``top_k``: keep at most this many of the tags that pass, the highest scores first.
    ``exclude``: tag names never reported.
    Names may be written with spaces instead of underscores and in any case (``Long hair``).
    """

    threshold: float = DEFAULT_THRESHOLD
    thresholds: Mapping[str, float] = field(default_factory=dict)
    top_k: int | None = None
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check_threshold(self.threshold, "threshold")
        for tag, value in self.thresholds.items():
            _check_threshold(value, f"threshold for {tag!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise TagSelectionError(f"top_k must be a positive integer, not {self.top_k!r}")
        if isinstance(self.exclude, str):
            raise TagSelectionError("exclude must be a collection of tag names, not one string")
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "exclude", frozenset(self.exclude))

    @classmethod
    def from_files(
        cls,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        thresholds_file: str | os.PathLike | None = None,
        top_k: int | None = None,
        exclude: Iterable[str] = (),
        exclude_file: str | os.PathLike | None = None,
    ) -> TagSelection:
        """A selection whose per-tag thresholds and extra exclusions come from files."""
        thresholds = read_thresholds(thresholds_file) if thresholds_file is not None else {}
        names = set(exclude)
        if exclude_file is not None:
            names.update(read_tag_list(exclude_file))
        return cls(threshold=threshold, thresholds=thresholds, top_k=top_k, exclude=frozenset(names))

    def __hash__(self) -> int:
        return hash((self.threshold, tuple(sorted(self.thresholds.items())), self.top_k, self.exclude))

    def resolve(self, tags: Sequence[str]) -> ResolvedSelection:
        """Bind the names to a model's tag list (as `taglens.models.tagnames.TagNames` does: spaces for
        underscores, any case); unknown names raise `UnknownTagError`, a `TagSelectionError`."""
        names = TagNames(tags)
        index = {name: i for i, name in enumerate(tags)}
        thresholds = list(self.thresholds.items())
        excluded = sorted(self.exclude)
        bound = names.resolve([name for name, _ in thresholds] + excluded)
        cutoffs = np.full(len(tags), self.threshold, dtype=np.float32)
        for name, (_, value) in zip(bound, thresholds):
            cutoffs[index[name]] = value
        for name in bound[len(thresholds):]:
            cutoffs[index[name]] = np.inf  # no score passes
        return ResolvedSelection(tuple(tags), cutoffs, self.top_k)


@dataclass(frozen=True, eq=False)
class ResolvedSelection:
    """A selection bound to one tag list: a float32 cutoff per tag (+inf when excluded)."""

    tags: tuple[str, ...]
    cutoffs: np.ndarray
    top_k: int | None = None

    def select(self, scores: np.ndarray) -> tuple[TagScore, ...]:
        """One image's (n_tags,) float32 scores -> the kept tags, highest score first.

        The comparison is in float32, like the reference's ``score > 0.4`` on a float32 tensor.
        """
        scores = np.asarray(scores, dtype=np.float32)
        passed = np.flatnonzero(scores > self.cutoffs)
        order = passed[np.argsort(-scores[passed], kind="stable")]  # ties keep the tag-list order
        if self.top_k is not None:
            order = order[: self.top_k]
        return tuple(TagScore(self.tags[i], float(scores[i])) for i in order)


def read_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """Per-tag thresholds from a CSV file of ``tag,threshold`` rows (a header row is allowed).

    Blank rows are skipped; a tag listed twice, a missing value or a value outside [0, 1] is an
    error naming the file and line.
    """
    path = Path(path)
    out: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = True
            for number, row in enumerate(csv.reader(f), 1):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if len(cells) != 2 or not cells[0]:
                    raise TagSelectionError(f"{path}:{number}: expected 'tag,threshold', got {','.join(row)!r}")
                tag, text = cells
                try:
                    value = float(text)
                except ValueError:
                    if first:
                        first = False
                        continue  # a header row such as "tag,threshold"
                    raise TagSelectionError(f"{path}:{number}: threshold {text!r} is not a number") from None
                first = False
                if tag in out:
                    raise TagSelectionError(f"{path}:{number}: {tag!r} is listed twice")
                try:
                    _check_threshold(value, f"threshold for {tag!r}")
                except TagSelectionError as exc:
                    raise TagSelectionError(f"{path}:{number}: {exc}") from None
                out[tag] = value
    except OSError as exc:
        raise TagSelectionError(f"{path}: cannot read thresholds file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TagSelectionError(f"{path}: not UTF-8 text") from None
    return out


def read_tag_list(path: str | os.PathLike) -> list[str]:
    """Tag names from a text file: one per line, or comma-separated; blank entries skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TagSelectionError(f"{path}: cannot read tag list ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TagSelectionError(f"{path}: not UTF-8 text") from None
    return split_tags(text.replace("\n", ","))


def split_tags(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (tag names never contain commas)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _check_threshold(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise TagSelectionError(f"{what} must be a number from 0 to 1, not {value!r}")


# ----------------------------------------------------------------------------- the tagger


class Tagger:
    """A loaded JoyTag checkpoint: its tags, preprocessing, placement and identity.

    Loading is the expensive part; the tagger is then shared by every job made from it.
    """

    def __init__(self, model: JoyTag, tags: Sequence[str], *, placement: Placement, model_id: str, revision: str):
        if len(tags) != model.config.n_tags:
            raise ValueError(f"{len(tags)} tag names for a model with {model.config.n_tags} outputs")
        self.placement = placement
        # channels_last lets oneDNN / cuDNN run the stem's convolutions in their fast layout
        # (same numbers; about 1.3x faster stem in float32, 1.8x in bfloat16 on CPU).
        self.model = placement.module(model).to(memory_format=torch.channels_last)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.config: JoyTagConfig = model.config
        self.tags: tuple[str, ...] = tuple(tags)
        self.transform = JoyTagTransform(model.config.image_size)
        self.model_id = model_id
        self.revision = revision

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = HUB_ID,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        tf32: bool = False,
    ) -> Tagger:
        """Load a hub id (default ``fancyfeast/joytag``) or a folder holding ``config.json``,
        ``model.safetensors`` and ``top_tags.txt``. ``device``: auto, cpu, cuda, cuda:N;
        ``dtype``: float32, bfloat16, float16; ``tf32``: let float32 CUDA matmuls and cuDNN
        convolutions use TF32 (off: IEEE float32, see `taglens.engine.placement`)."""
        placement = Placement.resolve(device, dtype, tf32=tf32)
        resolved = resolve_model(model, revision)
        config = JoyTagConfig.from_file(resolved.folder / CONFIG_FILE)
        tags = load_tags(resolved.folder, config.n_tags)
        network = load_model(resolved.folder, config)
        return cls(network, tags, placement=placement, model_id=resolved.model_id, revision=resolved.revision)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 preprocessed pixels -> (B, n_tags) float32 sigmoid scores."""
        with torch.inference_mode():
            logits = self._forward(self.placement.batch(pixels)).float()
            return torch.sigmoid(logits).cpu().numpy()

    def compile(self) -> None:
        """Compile the forward pass with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        self._forward = CompiledForward(self.model)

    def job(self, selection: TagSelection | None = None) -> TagJob:
        """The engine job that fills each record's ``tags`` (name ``"tag"``)."""
        return TagJob(self, (selection or TagSelection()).resolve(self.tags))

    def __call__(
        self,
        images: ImageSource | Iterable[ImageSource],
        threshold: float = DEFAULT_THRESHOLD,
        top_k: int | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
        exclude: Iterable[str] = (),
        selection: TagSelection | None = None,
        batch_size: int = 8,
        options: EngineOptions | None = None,
    ) -> list[Record]:
        """Tag one image or many (paths, bytes, file objects, PIL images, arrays): one `Record`
        per image, in order. A file that cannot be read or decoded gives a record with ``error``
        set, never an exception."""
        if selection is None:
            selection = TagSelection(threshold, thresholds or {}, top_k, frozenset(exclude))
        sources = [images] if _is_single_source(images) else list(images)  # type: ignore[arg-type]
        return list(run(sources, [self.job(selection)], options or EngineOptions(batch_size=batch_size)))

    def __repr__(self) -> str:
        return (f"Tagger({self.model_id!r}, revision={self.revision!r}, tags={len(self.tags)}, "
                f"device={self.placement.device}, dtype={self.placement.dtype})")


@dataclass(frozen=True, eq=False)
class TagJob:
    """An engine `Job`: a batch of JoyTag inputs -> ``{"tags": (TagScore, ...)}`` per image."""

    tagger: Tagger
    selection: ResolvedSelection
    name: str = "tag"

    @property
    def transform(self) -> JoyTagTransform:
        return self.tagger.transform

    @property
    def model_id(self) -> str:
        return self.tagger.model_id

    @property
    def revision(self) -> str:
        return self.tagger.revision

    @property
    def forward_key(self) -> Tagger:
        """Jobs with the same key share one forward pass (see `forward` / `finish`)."""
        return self.tagger

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every selection: (B, C, S, S) -> (B, n_tags) scores."""
        return self.tagger.scores(pixels)

    def finish(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """This job's part: each row of `forward`'s scores -> its record fields."""
        return [{"tags": self.selection.select(row)} for row in scores]

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self.finish(self.forward(pixels))


def _is_single_source(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)) or hasattr(
        images, "read"
    )
