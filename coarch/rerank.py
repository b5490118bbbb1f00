"""Code-aware re-ranking of hybrid search's fused candidates.

Retrieval scores each chunk on its own; a person judging the results also asks where a chunk
lives and what else was found. The rules, applied in this order to the best RERANK_DEPTH fused
candidates, each recorded per candidate (for `coarch search --explain`):

1. Secondary code below source: a chunk of tests, examples, docs or vendored code has its
   score multiplied by SECONDARY_FACTOR, unless the query asks for that kind of file ("test
   for the retry loop", "example of a custom handler").
2. A file's definitions before what merely uses them: among the candidates of one file, the
   chunks that define nothing (no symbol, in a language whose definitions the chunker names:
   the imports, a `module.exports = x` line, the statements between definitions) come after
   the file's definitions: the file's scores are handed out again, best first, to its
   definitions and then to the rest. Such a chunk matches a description through the names it
   imports or uses, while what a description describes is a definition; files keep their
   places (a file's best score stays its best). On the evaluation (scripts/eval_search.py)
   chunk MRR@10 rose in C (+0.015), Python (+0.033) and JavaScript (+0.004), none lost file
   MRR@10; halving such chunks' scores instead cost C 0.013 of file MRR@10 (a file found
   through its includes or tables then ranked lower).
3. A file with several strong chunks is lifted: each chunk gains FILE_LIFT times the scores of
   the other chunks of its file among the candidates. Off (FILE_LIFT 0): on the evaluation
   (scripts/sweep_fusion.py) every lift tried (0.05, 0.1, 0.2) lost file and chunk MRR in
   every language; a file that matches in many places is as often the wrong one.
4. One definition shown once: a chunk that overlaps or directly follows a better-ranked chunk
   of the same file and the same symbols (the pieces of one long function) is dropped, and the
   next candidate takes its place.

Definitions above mere uses is the identifier rule of coarch.search (a bare identifier query
puts the chunks that define it first), which runs after these rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import PurePosixPath

from coarch.languages import definition_patterns, ts_language

__all__ = ["Candidate", "rerank", "secondary_role"]

# Candidates re-ranked: the fused top, deep enough to bring a lifted chunk into the first ten.
RERANK_DEPTH = 50
# Multiplier of a secondary chunk's score: half, a general penalty, not a tuned one (the evaluation
# has no tests or docs to tune it on): enough to let a
# source chunk of similar score pass it, not enough to hide a clearly better match.
SECONDARY_FACTOR = 0.5
# Share of the file's other candidates' scores a chunk gains (rule 3, off: see above).
FILE_LIFT = 0.0

# Path segments and file names that mark a kind of secondary file.
_ROLE_SEGMENTS: dict[str, frozenset[str]] = {
    "test": frozenset(
        {
            "test",
            "tests",
            "testing",
            "__tests__",
            "spec",
            "specs",
            "t",
            "testdata",
            "fixtures",
            "__mocks__",
        }
    ),
    "example": frozenset({"example", "examples", "demo", "demos", "sample", "samples"}),
    "doc": frozenset({"doc", "docs", "documentation", "man"}),
    "vendored": frozenset(
        {
            "vendor",
            "vendored",
            "third_party",
            "thirdparty",
            "third-party",
            "external",
            "extern",
            "node_modules",
            "deps",
            "_vendor",
        }
    ),
}
_TEST_FILE = re.compile(
    r"^(?:test_.*|.*_test|.*[._-](?:test|spec)|.*Tests?|conftest)\.[A-Za-z0-9]+$"
)
_DOC_SUFFIXES = frozenset({".md", ".rst", ".txt", ".adoc", ".markdown", ".org"})
# Query words that ask for a kind of secondary file.
_ROLE_WORDS: dict[str, frozenset[str]] = {
    "test": frozenset(
        {
            "test",
            "tests",
            "testing",
            "tested",
            "spec",
            "specs",
            "unittest",
            "pytest",
            "mock",
            "fixture",
            "fixtures",
            "assert",
        }
    ),
    "example": frozenset(
        {"example", "examples", "demo", "demos", "sample", "samples", "usage", "tutorial"}
    ),
    "doc": frozenset({"doc", "docs", "documentation", "readme", "guide", "manual"}),
    "vendored": frozenset({"vendor", "vendored", "vendoring", "third", "bundled"}),
}
_QUERY_WORD = re.compile(r"[a-z]+")


def secondary_role(path: str) -> str | None:
    """ "test", "example", "doc" or "vendored" for a path of that kind, else None (source)."""
    pure = PurePosixPath(path)
    segments = [s.lower() for s in pure.parts[:-1]]
    for role, names in _ROLE_SEGMENTS.items():
        if any(s in names for s in segments):
            return role
    if _TEST_FILE.match(pure.name):
        return "test"
    if pure.suffix.lower() in _DOC_SUFFIXES:
        return "doc"
    return None


def asked_roles(query: str) -> frozenset[str]:
    """The kinds of secondary file a query asks for by name."""
    words = set(_QUERY_WORD.findall(query.lower()))
    return frozenset(role for role, names in _ROLE_WORDS.items() if words & names)


@cache
def finds_definitions(language: str | None) -> bool:
    """Whether coarch's chunker names the definitions of `language` (it has a grammar and
    definition patterns): only there does a chunk without a symbol define nothing."""
    return (
        language is not None
        and bool(definition_patterns(language))
        and ts_language(language) is not None
    )


@dataclass
class Candidate:
    """A fused candidate: where it is, its score, its language (None: unknown) and what each
    rule did to it."""

    id: int
    path: str
    start_line: int
    end_line: int
    symbols: tuple[str, ...]
    score: float
    language: str | None = None
    rules: dict[str, float] = field(default_factory=dict)  # rule -> score change

    @property
    def defines_nothing(self) -> bool:
        return not self.symbols and finds_definitions(self.language)

    def adjust(self, rule: str, new_score: float) -> None:
        if new_score != self.score:
            self.rules[rule] = round(new_score - self.score, 6)
            self.score = new_score


def rerank(
    query: str, candidates: list[Candidate], file_lift: float = FILE_LIFT, drop_repeats: bool = True
) -> list[Candidate]:
    """The candidates re-scored by the rules above, best first, repeats of one definition
    removed. `candidates` is the fused order, best first. The keywords are the evaluation's
    (scripts/sweep_fusion.py) way to measure a rule by turning it off."""
    asked = asked_roles(query)
    for c in candidates:
        role = secondary_role(c.path)
        if role is not None and role not in asked:
            c.adjust(f"secondary:{role}", c.score * SECONDARY_FACTOR)
    _definitions_first(candidates)
    by_file: dict[str, float] = {}
    for c in candidates:
        by_file[c.path] = by_file.get(c.path, 0.0) + c.score
    for c in candidates:
        if file_lift:
            c.adjust("file_lift", c.score + file_lift * (by_file[c.path] - c.score))
    ordered = sorted(candidates, key=lambda c: -c.score)  # stable: fused order breaks ties
    return _drop_repeats(ordered) if drop_repeats else ordered


def _definitions_first(candidates: list[Candidate]) -> None:
    """Rule 2: within each file holding both, the scores of its candidates go to its
    definitions first, then to its chunks that define nothing (each group keeps its order)."""
    by_file: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_file.setdefault(c.path, []).append(c)
    for group in by_file.values():
        kinds = {c.defines_nothing for c in group}
        if len(kinds) < 2:
            continue
        scores = sorted((c.score for c in group), reverse=True)
        ordered = sorted(group, key=lambda c: (c.defines_nothing, -c.score))
        for c, score in zip(ordered, scores):
            c.adjust("definitions_first", score)


def _drop_repeats(ordered: list[Candidate]) -> list[Candidate]:
    """Drops each chunk that overlaps or directly follows (either side) a better-ranked chunk
    of the same file and symbols."""
    kept: list[Candidate] = []
    for c in ordered:
        repeat = c.symbols and any(
            k.path == c.path
            and k.symbols == c.symbols
            and c.start_line <= k.end_line + 1
            and k.start_line <= c.end_line + 1
            for k in kept
        )
        if not repeat:
            kept.append(c)
    return kept
