"""Tag names as people type them: ``long hair``, ``Long_Hair`` and ``long_hair`` are one tag.

JoyTag's names (Danbooru's) are lower case with underscores and include emoticons (``^_^``,
``:d``). Every place that takes tag names from a person (a tag selection's thresholds and
exclusions, the library's and the HTTP service's search filters) binds them to a tag list here,
the same way: the name as given, else the name with each run of spaces made one underscore,
compared case-insensitively. A name that matches nothing is an `UnknownTagError` naming it, with
the closest names the list has.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from taglens.errors import UnknownTagError

SHOWN = 10  # unknown names an error message lists before "and N more"


def normalise(name: str) -> str:
    """The form names are compared in: ``" Long  Hair "`` -> ``"long_hair"``."""
    return "_".join(name.split()).casefold()


def candidates(name: str) -> tuple[str, ...]:
    """The spellings of ``name`` to look up, in order: as given (stripped), then normalised."""
    return tuple(dict.fromkeys((name.strip(), normalise(name))))


class TagNames:
    """A tag list that names typed by people are bound to; ``source`` says whose list it is in
    messages (e.g. ``"the model"``), ``note`` adds why a name may be missing."""

    def __init__(self, names: Iterable[str], *, source: str = "the model", note: str = ""):
        self.names = tuple(dict.fromkeys(names))
        self.source, self.note = source, note
        self._exact = set(self.names)
        self._normalised: dict[str, str] = {}
        for name in self.names:  # the first of two names that normalise alike wins
            self._normalised.setdefault(normalise(name), name)

    def find(self, name: str) -> str | None:
        """The list's own spelling of ``name``, or None."""
        stripped = name.strip()
        if stripped in self._exact:
            return stripped
        return self._normalised.get(normalise(name))

    def resolve(self, names: Sequence[str]) -> list[str]:
        """The list's spelling of each name, in order; any unknown name raises `UnknownTagError`."""
        found = [self.find(name) for name in names]
        unknown = [name for name, hit in zip(names, found) if hit is None]
        if unknown:
            raise UnknownTagError(self._message(unknown), unknown)
        return [hit for hit in found if hit is not None]

    def suggestions(self, name: str, n: int = 3) -> list[str]:
        """The closest names the list has (by spelling), best first."""
        close = difflib.get_close_matches(normalise(name), list(self._normalised), n=n)
        return [self._normalised[key] for key in close]

    def _message(self, unknown: list[str]) -> str:
        parts = []
        for name in unknown[:SHOWN]:
            close = self.suggestions(name)
            parts.append(repr(name) + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
        more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        noun = "tag" if len(unknown) == 1 else "tags"
        return f"{self.source} has no {noun} named {', '.join(parts)}{more}" + (f"; {self.note}" if self.note else "")
