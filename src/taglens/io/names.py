"""File names that are not valid UTF-8 (``bad\\xff\\xfe.jpg`` is legal on Linux), through every output.

Python reads such a name as a ``str`` holding lone surrogates (``os.fsdecode``'s surrogateescape),
which works for every file operation but cannot be encoded as UTF-8. Two documented forms, one per
kind of output:

- JSON (JSON lines, HTTP responses, the quarantine journal): `dumps` writes each lone surrogate as
  a ``\\udcXX`` escape. That is valid JSON, and ``json.loads`` gives back the very ``str`` Python
  uses for the file, so ``os.fsencode(json.loads(line)["path"])`` is the name's bytes, exactly.
- Text columns (CSV, Parquet, ``.paths.txt``, plain text): `printable` writes each byte that is not
  UTF-8 as ``\\xNN`` (Python's ``backslashreplace``), so ``bad\\xff\\xfe.jpg`` reads as such.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(name: str) -> str:
    """``name`` as valid UTF-8 text: unchanged when it is, else each undecodable byte as ``\\xNN``."""
    if not _SURROGATE.search(name):
        return name
    return name.encode("utf-8", "surrogateescape" if _escaped_only(name) else "surrogatepass").decode(
        "utf-8", "backslashreplace")


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` that never fails on a file name: lone
    surrogates (only ever inside JSON strings) become ``\\udcXX`` escapes, which read back exactly."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _SURROGATE.search(text) else text


def _escaped_only(name: str) -> bool:
    """Every surrogate in ``name`` is one surrogateescape made for a byte (U+DC80..U+DCFF)."""
    return all("\udc80" <= c <= "\udcff" for c in _SURROGATE.findall(name))
