"""Which chunks a search may return: `Filters` (languages, path globs) and their checks.

Bad filters are refused before any search with a UsageError that says what would work: an
unknown language lists the known ones, a glob pathspec cannot use says how to write it. The
store applies filters inside its queries (coarch.store.reads): languages as an SQL condition,
paths through `PathMatcher`, registered as an SQL function.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pathspec

from coarch.errors import UsageError


@dataclass(frozen=True)
class Filters:
    """Which chunks a search may return: languages (any of) and path globs.

    Globs follow .gitignore rules (`*.py` matches at any depth, `src/` a folder and everything
    under it, `/docs` only at the root); a glob starting with `!` excludes. A path passes when it
    matches at least one include (or there are none) and no exclude.
    """

    languages: frozenset[str] | None = None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, lang: str | Sequence[str] | None = None, path: str | Sequence[str] | None = None
    ) -> Filters:
        langs = [part for item in _as_list(lang) for part in item.split(",")]
        globs = _as_list(path)
        includes = tuple(g for g in globs if not g.startswith("!"))
        excludes = tuple(g[1:] for g in globs if g.startswith("!"))
        for glob in (*includes, *excludes):
            if not glob.strip():
                raise UsageError("empty --path glob")
            _check_glob(glob)
        languages = frozenset(canonical_language(x) for x in langs if x.strip()) or None
        return cls(languages, includes, excludes)

    @property
    def active(self) -> bool:
        return bool(self.languages or self.includes or self.excludes)

    @property
    def by_path(self) -> bool:
        """Whether any glob restricts the paths."""
        return bool(self.includes or self.excludes)

    def path_matcher(self) -> PathMatcher:
        return PathMatcher(self.includes, self.excludes)


def _check_glob(glob: str) -> None:
    """Refuses a glob that pathspec cannot use: it would silently match nothing (an unclosed
    `[`, a `#` comment) or fail while matching (a reversed range such as `[z-a]`)."""
    try:
        (pattern,) = pathspec.GitIgnoreSpec.from_lines([glob]).patterns
        usable = pattern.regex is not None
    except (re.error, ValueError):
        usable = False
    if not usable:
        raise UsageError(
            f"invalid --path glob {glob!r}",
            hint="globs follow .gitignore rules: close every `[` (`\\[` is a "
            "literal one), keep ranges in order (`[a-z]`), `\\#` for a "
            "leading #",
        )


def known_languages() -> list[str]:
    """Every language name the index can hold, sorted (coarch.languages.known_languages)."""
    from coarch import languages

    return languages.known_languages()


def canonical_language(name: str) -> str:
    """A language as the index names it (`kt`, `c#`, `.ts`, `Makefile` map to theirs; see
    coarch.languages.canonical_language). Anything else is a UsageError that lists the known
    languages: no chunk could match it."""
    from coarch.languages import canonical_language as canonical

    found = canonical(name)
    known = known_languages()
    if found not in known:
        raise UsageError(
            f"unknown language {name.strip()!r}",
            hint="use a language, an alias or an extension (py, ts, kt); known "
            "languages: " + ", ".join(known),
        )
    return found


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class PathMatcher:
    """The path part of Filters as one callable (registered as an SQL function)."""

    def __init__(self, includes: Sequence[str], excludes: Sequence[str]) -> None:
        self._include = pathspec.GitIgnoreSpec.from_lines(includes) if includes else None
        self._exclude = pathspec.GitIgnoreSpec.from_lines(excludes) if excludes else None

    def __call__(self, path: str) -> bool:
        if self._include is not None and not self._include.match_file(path):
            return False
        return not (self._exclude is not None and self._exclude.match_file(path))
