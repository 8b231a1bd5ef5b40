"""Inputs anywhere: local paths, globs and URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``,
or any protocol fsspec knows), listed once and read through pyarrow filesystems.

The Ray job lists its inputs on the driver (`list_locations`) and reads each file in a CPU task
(`read_location`), so an unreadable file becomes an error record there instead of failing the
job. Local arguments are expanded exactly as `taglens.io.inputs` expands them for the local engine
(same files, same order, same names), plus quoted globs; a URI names a file, a folder (walked,
keeping image suffixes, skipping hidden entries) or a glob (``*``, ``?``, ``[...]`` within one
folder, ``**`` across folders, as the shell has them).

A location that cannot be used at all (a missing bucket, credentials the service refuses, an
endpoint that does not answer) raises `LocationError` with one line while listing, before any
model loads; a missing file inside a reachable bucket is an error record, as a missing local
file is. S3-compatible services are reached through pyarrow's own settings: ``AWS_ENDPOINT_URL``
(or ``?endpoint_override=host:port&scheme=http`` on the URI), ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

from taglens.errors import ImageDecodeError, TaglensError
from taglens.io.inputs import expand_stdin, image_suffixes, iter_image_paths

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?[]")
_AWS_ERROR = re.compile(r"AWS Error (\w+) during \w+ operation: ([^;(]*)")
_OS_DETAIL = re.compile(r"Detail: \[errno \d+\] (.+)$")
_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "UNRECOGNIZED_CLIENT",
           "EXPIRED_TOKEN", "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN")


class LocationError(TaglensError):
    """An input or output location that cannot be used at all: no such bucket, access denied, the
    storage endpoint unreachable, or an output folder that cannot be written."""


def storage_error(location: str, exc: BaseException, *, writing: bool = False) -> LocationError:
    """One line for a filesystem failure at ``location``: what went wrong and what to check."""
    text = " ".join(str(exc).split())
    match = _AWS_ERROR.search(text)
    code, detail = (match.group(1), match.group(2).strip().rstrip(".")) if match else ("", text)
    if code == "NO_SUCH_BUCKET" or "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        reason = "no such bucket (taglens does not create buckets)"
    elif code in _DENIED or "AccessDenied" in text:
        reason = ("access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                  f"AWS_PROFILE) and the bucket's permissions{' to write' if writing else ''}")
    elif code == "NETWORK_CONNECTION" or "curlCode" in text:
        reason = f"cannot reach the storage service ({detail}); check AWS_ENDPOINT_URL and the network"
    else:
        os_reason = _OS_DETAIL.search(text)
        text = os_reason.group(1) if os_reason else getattr(exc, "strerror", None) or text
        reason = (f"cannot write there ({text})" if writing else text)[:300]
    return LocationError(f"{location}: {reason}")


def is_object_store(filesystem) -> bool:
    """S3 or GCS: paths start with a bucket, and there are no real folders."""
    from pyarrow import fs as pafs

    stores = tuple(getattr(pafs, name) for name in ("S3FileSystem", "GcsFileSystem") if hasattr(pafs, name))
    return isinstance(filesystem, stores)


def check_bucket(filesystem, path: str, location: str) -> None:
    """Refuse a location on an object store whose bucket does not exist (pyarrow reports every
    key of a missing bucket as a missing file, which would hide a typo in the bucket's name)."""
    from pyarrow import fs as pafs

    if not is_object_store(filesystem):
        return
    bucket = path.strip("/").split("/", 1)[0]
    if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise LocationError(f"{location}: no such bucket {bucket!r} (taglens does not create buckets)")


@dataclass(frozen=True)
class Location:
    """One input file. ``path`` names it in records (a local path as given, or the URI);
    ``fs_path`` is where to read it: an absolute local path when ``remote`` is false, else the
    path inside the filesystem of ``path``'s URI. ``mtime`` comes from a remote listing."""

    path: str
    fs_path: str
    remote: bool = False
    mtime: float | None = None


def is_uri(text: str) -> bool:
    """``scheme://...`` (``s3://b/k``, ``file:///x``); a Windows drive path is not one."""
    return bool(_URI.match(text))


def list_locations(arguments: Iterable[str], *, recursive: bool = True, stdin: TextIO | None = None) -> Iterator[Location]:
    """Yield the files named by ``arguments`` (files, folders, globs, URIs; ``-`` reads more
    arguments from stdin, one per line). A named file that does not exist is yielded anyway so
    that it becomes an error record, as with the local engine."""
    suffixes = image_suffixes()
    for argument in expand_stdin(arguments, stdin):
        yield from _expand(argument, recursive, suffixes)


def _expand(argument: str, recursive: bool, suffixes: frozenset[str]) -> Iterator[Location]:
    if is_uri(argument):
        yield from _expand_uri(argument, recursive, suffixes)
        return
    names = [argument]
    if _GLOB.search(argument) and not os.path.exists(argument):
        names = sorted(glob.glob(argument, recursive=True))
    for path in iter_image_paths(names, recursive=recursive):
        yield Location(path, os.path.abspath(path))


def _expand_uri(uri: str, recursive: bool, suffixes: frozenset[str]) -> Iterator[Location]:
    from pyarrow import fs as pafs

    pattern = None
    base = uri
    magic = _GLOB.search(uri)
    if magic:
        pattern = uri
        base = uri[:uri.rfind("/", 0, magic.start()) + 1]
    try:
        filesystem, root = filesystem_for(base)
        check_bucket(filesystem, root, uri)
        info = filesystem.get_file_info(root)
        if pattern is None and info.type != pafs.FileType.Directory:
            yield Location(uri, root, True, _timestamp(info.mtime))  # a file, or missing: its read says why
            return
        if info.type != pafs.FileType.Directory:
            return
        deep = recursive if pattern is None else ("**" in pattern or "/" in pattern[len(base):])
        found = filesystem.get_file_info(pafs.FileSelector(root, recursive=deep))
    except OSError as exc:
        raise storage_error(uri, exc) from None
    prefix = base.rstrip("/")
    for entry in sorted((e for e in found if e.type == pafs.FileType.File), key=lambda e: e.path):
        relative = entry.path[len(root.rstrip("/")):]
        name = prefix + relative
        if pattern is not None:
            if not _glob_match(relative.strip("/").split("/"), pattern[len(prefix):].strip("/").split("/")):
                continue
        elif any(part.startswith(".") for part in relative.split("/")) or \
                os.path.splitext(entry.path)[1].lower() not in suffixes:
            continue
        yield Location(name, entry.path, True, _timestamp(entry.mtime))


def _glob_match(parts: list[str], patterns: list[str]) -> bool:
    """Shell glob rules, as `glob.glob(recursive=True)` applies them: ``*``, ``?`` and ``[...]``
    stay within one path segment and skip names starting with a dot; ``**`` spans any number
    of segments."""
    if not patterns:
        return not parts
    head, rest = patterns[0], patterns[1:]
    if head == "**":
        return any(_glob_match(parts[i:], rest) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _glob_match(parts[1:], rest)


def read_location(location: Location, max_bytes: int) -> bytes:
    """The bytes of a remote file (at most ``max_bytes + 1``, so the decoder can refuse a larger
    one). Raises `ImageDecodeError` with the reason; never anything else."""
    try:
        parts = urlsplit(location.path)
        with _filesystem(parts.scheme, parts.netloc).open_input_stream(location.fs_path) as stream:
            return stream.read(max_bytes + 1)
    except TaglensError as exc:
        raise ImageDecodeError(location.path, str(exc)) from None
    except FileNotFoundError:
        raise ImageDecodeError(location.path, "no such file") from None
    except PermissionError:
        raise ImageDecodeError(location.path, "permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError(location.path, "is a folder, not a file") from None
    except Exception as exc:  # network and service errors come in many types
        raise ImageDecodeError(location.path, f"cannot read file ({type(exc).__name__}: {exc})"[:300]) from None


def filesystem_for(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI: pyarrow's own filesystems first (S3, GCS,
    HDFS, local), else fsspec's (``pip install s3fs`` etc. for their protocols). One filesystem
    object per scheme and host is kept per process, so credentials are resolved once."""
    from pyarrow import fs as pafs

    parts = urlsplit(uri)
    filesystem = _filesystem(parts.scheme, parts.netloc)
    if isinstance(filesystem, pafs.PyFileSystem):
        import fsspec

        return filesystem, fsspec.core.url_to_fs(uri)[1]
    return filesystem, pafs.FileSystem.from_uri(uri)[1]


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str):
    from pyarrow import fs as pafs

    uri = f"{scheme}://{netloc}/"
    try:
        return pafs.FileSystem.from_uri(uri)[0]
    except (ValueError, NotImplementedError) as exc:  # ArrowInvalid is a ValueError
        try:
            import fsspec
        except ImportError:
            raise TaglensError(f"cannot read {scheme}:// ({exc}); install fsspec and its {scheme} plugin") from None
        try:
            filesystem, _ = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as fsspec_exc:
            raise TaglensError(f"cannot read {scheme}:// ({fsspec_exc})") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))


def _timestamp(moment) -> float | None:
    return moment.timestamp() if moment is not None else None
