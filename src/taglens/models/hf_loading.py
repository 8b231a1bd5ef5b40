"""Loading transformers checkpoints strictly: every tensor the architecture needs comes from the file.

transformers fills tensors a checkpoint lacks (a deleted text tower, the head of a CLIP folder
loaded as a classifier) with random values, and only logs a report about it, which the command
line keeps off the terminal. Here that report becomes a `CheckpointError` naming the missing,
unexpected and wrongly shaped tensors, so no family ever computes with invented weights.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from taglens.errors import CheckpointError

_SHOWN = 6  # tensor names shown per kind before "and N more"


def load_strict(auto_class: Any, folder: str | Path, *, model_id: str, what: str, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(folder, **kwargs)`` (safetensors only, no progress bar) that
    refuses a checkpoint whose tensors do not fill the model exactly. ``what`` names the family in
    the message (``"SigLIP"``, ``"image-classifier"``)."""
    try:
        with quiet_progress():
            model, info = auto_class.from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                                     ignore_mismatched_sizes=True, **kwargs)
    except RuntimeError as exc:  # transformers raises its state-dict load errors after its report
        text = str(exc).strip().splitlines()
        raise CheckpointError(f"{model_id}: its weights do not load into a {what} model "
                              f"({text[-1].strip() if text else type(exc).__name__})") from None
    problems = loading_problems(info)
    if problems:
        raise CheckpointError(f"{model_id}: not a complete {what} checkpoint; {problems}")
    return model


def loading_problems(info: dict[str, Any]) -> str:
    """transformers' ``output_loading_info`` as one line ("" when the checkpoint fits exactly)."""
    parts = []
    missing = set(info.get("missing_keys") or ())
    if missing:
        parts.append(f"weights missing: {_names(missing)}")
    unexpected = set(info.get("unexpected_keys") or ())
    if unexpected:
        parts.append(f"unexpected weights: {_names(unexpected)}")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda item: str(item[0]))
    if mismatched:
        shown = [f"{key} ({list(found)} in the file, {list(wanted)} in the model)"
                 for key, found, wanted in mismatched[:_SHOWN]]
        more = f" and {len(mismatched) - _SHOWN} more" if len(mismatched) > _SHOWN else ""
        parts.append(f"weights of the wrong shape: {', '.join(shown)}{more}")
    errors = [str(e).strip().splitlines()[0] for e in info.get("error_msgs") or () if str(e).strip()]
    if errors:
        parts.append(f"load errors: {'; '.join(errors[:3])}")
    return "; ".join(parts)


def _names(keys: Iterable[str]) -> str:
    """Sorted names with layer numbers folded (``text_model.encoder.layers.*.mlp.fc1.weight``),
    the count of tensors first, at most `_SHOWN` names."""
    keys = sorted(keys)
    folded = sorted(set(re.sub(r"\.\d+\.", ".*.", key) for key in keys))
    more = f" and {len(folded) - _SHOWN} more" if len(folded) > _SHOWN else ""
    return f"{len(keys)} ({', '.join(folded[:_SHOWN])}{more})"


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar for one load, restoring the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging._tqdm_active = False  # not disable_progress_bar(): that also flips huggingface_hub's
    try:
        yield
    finally:
        hf_logging._tqdm_active = was_enabled
