"""Model resolution: the one place a ``--model`` argument becomes a local checkpoint folder.

A local folder is used as it is. Anything else is a hub id, fetched (or found in the cache)
through huggingface_hub, so ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and a revision are
honoured exactly as transformers honours them. Only safetensors weights are ever loaded: a
pickled checkpoint can run code when unpickled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from taglens.errors import CheckpointError, ModelNotFoundError, UnsafeCheckpointError

# What a checkpoint folder needs: configs, safetensors weights, tokenizer and tag-list files.
# Pickled weights (*.bin, *.pt, *.pth, *.ckpt) are never downloaded.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.csv")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CHECKPOINT_FILES = ("a checkpoint folder, as the hub serves it, holds config.json and model.safetensors (or its "
                    "model-0000N-of-0000M.safetensors shards), plus top_tags.txt for JoyTag, or "
                    "preprocessor_config.json and the tokenizer files for SigLIP and CLIP")


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint folder on disk plus the identity to record with its results.

    ``model_id`` is the hub id or the absolute folder; ``revision`` is the hub commit of a
    snapshot, or for a local folder ``local-`` plus a fingerprint of its config and weight files
    (size and mtime), so replacing the weights changes it.
    """

    folder: Path
    model_id: str
    revision: str


def resolve_model(model: str | os.PathLike, revision: str | None = None, *, cache_dir: str | None = None) -> ResolvedModel:
    """Turn a model argument (folder or hub id) into a local folder holding safetensors weights."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        folder = path.resolve()
        require_safetensors(folder)
        return ResolvedModel(folder, str(folder), _local_fingerprint(folder))
    if path.exists():
        raise ModelNotFoundError(f"model {text!r} is a file; pass the folder that holds its config.json")
    if _looks_like_path(text):
        raise ModelNotFoundError(f"model folder {text!r} does not exist")
    if "/" not in text:
        raise ModelNotFoundError(f"model folder {text!r} does not exist (a hub id has the form org/name)")
    folder = _snapshot(text, revision, cache_dir)
    require_safetensors(folder, model_name=text)
    return ResolvedModel(folder, text, folder.name)


def require_safetensors(folder: Path, model_name: str | None = None) -> None:
    """Refuse a folder without ``*.safetensors`` weights: `UnsafeCheckpointError` when it holds
    pickles instead, else `CheckpointError` saying what a checkpoint folder holds."""
    name = model_name or str(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeCheckpointError(
            f"{name}: only pickled weights ({', '.join(pickles)}); taglens loads safetensors only, because "
            "unpickling can run arbitrary code. Convert the checkpoint to model.safetensors first "
            "(for transformers models: from_pretrained(...).save_pretrained(dir, safe_serialization=True))."
        )
    lacks = ([] if (folder / "config.json").is_file() else ["config.json"]) + ["*.safetensors weights"]
    raise CheckpointError(f"{name} is not a checkpoint folder: it has no {' and no '.join(lacks)}; "
                          f"{CHECKPOINT_FILES}")


def cached_file(model_id: str, revision: str, filename: str) -> Path | None:
    """``filename`` of a checkpoint recorded as (``model_id``, ``revision``) if it is on this
    machine (in its folder, or in the hub cache: the network is never asked), else None."""
    if Path(model_id).is_absolute():
        path = Path(model_id) / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def _looks_like_path(text: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; a path prefix, a backslash or more parts mean a path."""
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(HUB_PATTERNS))
        )
    except Exception as exc:  # offline, not cached, no such repo, gated, HTTP errors: one clear message
        cache = cache_dir or constants.HF_HUB_CACHE
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        at = f" at revision {revision!r}" if revision else ""
        raise ModelNotFoundError(
            f"could not fetch model {repo_id!r}{at} from the Hugging Face hub{offline}, and it is not in the "
            f"local cache {cache} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"Either download it where there is network (`hf download {repo_id}`, then copy the cache here "
            f"and point HF_HOME at it), or give the checkpoint folder itself in place of the hub id, e.g. "
            f"/path/to/{repo_id.split('/')[-1]}"
        ) from None


def _local_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in (".json", ".safetensors", ".txt", ".model")):
            st = p.stat()
            digest.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "local-" + digest.hexdigest()[:16]
