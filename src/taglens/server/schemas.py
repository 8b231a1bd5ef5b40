"""The API's request and response shapes (pydantic), split by direction: options in, records out.

Options mirror the command line's flags (``taglens tag --threshold`` is ``threshold`` here,
``taglens analyze --label-top-k`` is ``label_top_k``) and turn into a `taglens.models.modelset.TaskRequest`.
Records out are exactly the CLI's JSON lines (`taglens.records.Record.to_json`): ``path``, then
``error`` or the fields of the jobs that ran, then a ``<task>_error`` for each job that failed on
the image (the other jobs' fields kept); fields of jobs that did not run are absent.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from taglens.errors import LabelsError
from taglens.models import registry
from taglens.models.request import TaskRequest
from taglens.models.siglip import check_templates
from taglens.records import TASK_FIELDS, LabelScore, NsfwResult, TagScore, error_field, wire_fields

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
JOYTAG, SIGLIP, CLASSIFIER = (registry.config(name) for name in ("joytag", "siglip", "vit_classifier"))
Name = Annotated[str, Field(min_length=1, max_length=200)]
TopK = Annotated[int, Field(ge=1, le=100_000)]
Task = Literal["tag", "classify", "nsfw", "embed"]
# standard alphabet, padding optional, no whitespace: what the schema says is exactly what decodes
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$"
# one '{}' where the label goes, no other braces (what str.format accepts with one argument)
TEMPLATE = r"^[^{}]*\{\}[^{}]*$"
Template = Annotated[str, Field(min_length=2, max_length=500, pattern=TEMPLATE)]
# a per-tag threshold as a form field: TAG=VALUE (the last '=' splits; tags may contain '=')
THRESHOLD_FIELD = r"^.+=(?:0(?:\.[0-9]{1,8})?|1(?:\.0{1,8})?|\.[0-9]{1,8})$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- images in a JSON body ------------------------------------------------------------------------


class ImageData(Strict):
    """An image's bytes, base64-encoded (standard alphabet, padding optional)."""

    data: str = Field(min_length=2, pattern=BASE64, json_schema_extra={"format": "byte"},
                      description="The encoded image file (JPEG, PNG, WebP, ...), base64 without line breaks.")
    name: str | None = Field(None, max_length=1000, description="Echoed as the record's path.")


class ImagePath(Strict):
    """A file on the server, inside a folder the server was started with (``--allow-path``)."""

    path: str = Field(min_length=1, max_length=4096)


ImageInput = ImageData | ImagePath


# ---- options --------------------------------------------------------------------------------------


def nonblank(values: list[str]) -> list[str]:
    """Names stripped of surrounding spaces; a blank one is an error."""
    out = [v.strip() for v in values]
    if any(not v for v in out):
        raise ValueError("names must not be blank")
    return out


def templates_ok(templates: list[str]) -> list[str]:
    try:
        return list(check_templates(templates))
    except LabelsError as exc:
        raise ValueError(str(exc)) from None


class TagOptions(Strict):
    """``taglens tag``: keep tags whose score is > threshold (per-tag thresholds win), at most
    top_k, never the excluded ones."""

    threshold: Probability = JOYTAG.threshold  # type: ignore[assignment]
    thresholds: dict[str, Probability] = Field(default_factory=dict, max_length=10_000,
                                               description="Per-tag thresholds replacing `threshold` "
                                                           "(in a form: fields `TAG=VALUE`).")
    top_k: TopK | None = None
    exclude: list[Name] = Field(default_factory=list, max_length=10_000)

    def task_request(self) -> TaskRequest:
        from taglens.models.tag_selection import TagSelection

        return TaskRequest(tasks=("tag",), tag_selection=TagSelection(
            threshold=self.threshold, thresholds=self.thresholds, top_k=self.top_k, exclude=frozenset(self.exclude)))


class ClassifyOptions(Strict):
    """``taglens classify``: SigLIP's probability per label (CLIP: softmax over the labels)."""

    labels: list[Name] = Field(min_length=1, max_length=1000)
    templates: list[Template] = Field(
        default_factory=lambda: [SIGLIP.template], min_length=1, max_length=50,
        description="Prompts with '{}' where the label goes; several are averaged.")
    threshold: Probability | None = None
    top_k: TopK | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        return nonblank(labels)

    @field_validator("templates")
    @classmethod
    def _templates(cls, templates: list[str]) -> list[str]:
        return templates_ok(templates)

    def task_request(self) -> TaskRequest:
        return TaskRequest(tasks=("classify",), labels=tuple(self.labels), templates=tuple(self.templates),
                           classify_threshold=self.threshold, classify_top_k=self.top_k)


class NsfwOptions(Strict):
    """``taglens nsfw``: flagged when a positive label scores at or above threshold."""

    threshold: Probability = CLASSIFIER.threshold  # type: ignore[assignment]
    positive_label: list[Name] = Field(default_factory=lambda: list(CLASSIFIER.positive_labels), min_length=1, max_length=100)

    @field_validator("positive_label")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        return nonblank(labels)

    def task_request(self) -> TaskRequest:
        return TaskRequest(tasks=("nsfw",), nsfw_threshold=self.threshold, positive_labels=tuple(self.positive_label))


class EmbedOptions(Strict):
    """``taglens embed``: the L2-normalised image embedding."""

    def task_request(self) -> TaskRequest:
        return TaskRequest(tasks=("embed",))


class AnalyzeOptions(Strict):
    """``taglens analyze``: several jobs in one pass, options named as the command's flags."""

    tasks: list[Task] = Field(default_factory=lambda: ["tag", "nsfw"], min_length=1, max_length=4)
    tag_threshold: Probability = JOYTAG.threshold  # type: ignore[assignment]
    thresholds: dict[str, Probability] = Field(default_factory=dict, max_length=10_000,
                                               description="tag: per-tag thresholds (in a form: fields `TAG=VALUE`).")
    tag_top_k: TopK | None = None
    exclude: list[Name] = Field(default_factory=list, max_length=10_000)
    labels: list[Name] = Field(default_factory=list, max_length=1000)
    templates: list[Template] = Field(
        default_factory=lambda: [SIGLIP.template], min_length=1, max_length=50)
    label_threshold: Probability | None = None
    label_top_k: TopK | None = None
    nsfw_threshold: Probability = CLASSIFIER.threshold  # type: ignore[assignment]
    positive_label: list[Name] = Field(default_factory=lambda: list(CLASSIFIER.positive_labels), min_length=1, max_length=100)

    @field_validator("labels", "positive_label")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return nonblank(names)

    @field_validator("templates")
    @classmethod
    def _templates(cls, templates: list[str]) -> list[str]:
        return templates_ok(templates)

    @model_validator(mode="after")
    def _labels_for_classify(self) -> AnalyzeOptions:
        if "classify" in self.tasks and not self.labels:
            raise ValueError("the classify task needs labels")
        return self

    def task_request(self) -> TaskRequest:
        from taglens.models.tag_selection import TagSelection

        return TaskRequest(
            tasks=tuple(self.tasks),
            tag_selection=TagSelection(threshold=self.tag_threshold, thresholds=self.thresholds,
                                       top_k=self.tag_top_k, exclude=frozenset(self.exclude)),
            labels=tuple(self.labels) if "classify" in self.tasks else (),
            templates=tuple(self.templates),
            classify_threshold=self.label_threshold,
            classify_top_k=self.label_top_k,
            nsfw_threshold=self.nsfw_threshold,
            positive_labels=tuple(self.positive_label),
        )


# ---- search ---------------------------------------------------------------------------------------


class SearchFilters(Strict):
    tags: list[Name] = Field(default_factory=list, max_length=100, description="Only images with every tag.")
    no_tags: list[Name] = Field(default_factory=list, max_length=100, description="Only images with none of them.")
    max_nsfw: Probability | None = Field(None, description="Only images whose NSFW probability is at most this.")
    min_score: float | None = Field(None, ge=-1e6, le=1e6, description="Only results scoring at least this.")
    limit: int = Field(20, ge=1, le=1000)


class SearchOptions(SearchFilters):
    """A search: texts, example images (uploaded, base64, or indexed ids), minus parts, filters.
    Texts may carry a weight as ``"2:beach"``."""

    q: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list, max_length=20)
    minus: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list, max_length=20)
    image_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(default_factory=list, max_length=20)
    minus_image_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(default_factory=list, max_length=20)


# ---- JSON request bodies --------------------------------------------------------------------------

Images = Annotated[list[ImageInput], Field(min_length=1, max_length=10_000)]


class TagJson(TagOptions):
    images: Images


class ClassifyJson(ClassifyOptions):
    images: Images


class NsfwJson(NsfwOptions):
    images: Images


class EmbedJson(EmbedOptions):
    images: Images


class AnalyzeJson(AnalyzeOptions):
    images: Images


class SearchJson(SearchOptions):
    images: list[ImageInput] = Field(default_factory=list, max_length=20)


# ---- responses ------------------------------------------------------------------------------------


def part_model(part: type, name: str) -> type[BaseModel]:
    """The response model of a record part (`taglens.records.Part`): its dataclass fields."""
    hints = typing.get_type_hints(part)
    return create_model(name, **{f.name: (hints[f.name], ...) for f in dataclasses.fields(part)})


TagScoreOut = part_model(TagScore, "TagScoreOut")
LabelScoreOut = part_model(LabelScore, "LabelScoreOut")
NsfwOut = part_model(NsfwResult, "NsfwOut")
_OUT = {TagScore: TagScoreOut, LabelScore: LabelScoreOut, NsfwResult: NsfwOut}


def _wire(hint: Any) -> Any:
    """A record field's type as the response declares it: parts as their models, tuples as lists."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_wire(a) for a in args)]  # noqa: UP007 (built from parts)
    if origin is tuple:
        return list[_wire(args[0])]  # type: ignore[misc]
    return _OUT.get(hint, hint)


_DESCRIPTIONS = {
    "error": "Why the image has no result: it could not be read or decoded, or every job failed on it.",
    **{error_field(task): f"Why the {task} job failed on this image; the other jobs' fields are kept."
       for task in TASK_FIELDS},
}
RecordOut = create_model(
    "RecordOut",
    __doc__="""One image: ``path`` and ``error`` (no result at all), or the fields of the jobs that ran
    (others absent); a ``<task>_error`` for each job that failed on it (see `taglens.records`).""",
    **{name: (_wire(hint), ... if name == "path" else Field(None, description=_DESCRIPTIONS.get(name)))
       for name, hint in wire_fields().items()},
)


class ModelOut(BaseModel):
    task: str
    model_id: str
    revision: str


class ResultsOut(BaseModel):
    results: list[RecordOut]
    models: list[ModelOut]


class HitOut(BaseModel):
    """A search result: the CLI's ``search --format jsonl`` line plus the image's ``id``."""

    id: int
    path: str
    score: float | None
    tags: list[TagScoreOut] | None
    nsfw: NsfwOut | None


class SearchOut(BaseModel):
    results: list[HitOut]


class ImageInfoOut(BaseModel):
    id: int
    sha256: str
    width: int
    height: int
    paths: list[str]
    tags: list[TagScoreOut] | None
    nsfw: NsfwOut | None


class QueueOut(BaseModel):
    admitted: int
    capacity: int
    waiting_for_batch: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    models: list[ModelOut]
    library: bool
    queue: QueueOut


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]]


class UnknownTagsOut(BaseModel):
    """Tag names (in filters or a tag selection) that the tagger does not have, as given."""

    detail: str
    unknown_tags: list[str]


class ImageErrorsOut(BaseModel):
    """Every image failed: each one's reason, in request order."""

    detail: str
    results: list[RecordOut]
