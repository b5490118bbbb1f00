"""Query -> hits: FAISS vector search and FTS5 BM25 keyword search, fused by reciprocal rank.

Three modes. `semantic` ranks chunks by cosine similarity between the query's vector and the
chunk vectors (FAISS, inner product on L2-normalised rows). `keyword` ranks them by BM25 over the
FTS5 table, with the query's identifiers split exactly as at indexing time (coarch.identifiers).
`hybrid` (the default) fuses the two rankings by reciprocal rank fusion chosen by kind of
query (coarch.fusion), re-ranks the fused top by code-aware rules (coarch.rerank: tests, docs and
vendored code below source, a file with several strong chunks lifted, one long definition shown
once), and when the query is a bare identifier (`parse_config`, `HttpClient.send`) puts the
chunks that *define* it first. Queries are embedded in the form chunks were: identifiers split
into words (coarch.identifiers.model_text). `explain=True` says, per hit, why it is there.

Reading never writes and never blocks an indexer: SQLite is opened read-only and every search
runs in one read transaction (it sees the last committed state); the FAISS file is
memory-mapped. While an indexer runs, the FAISS file lags behind SQLite: chunks it does not cover
yet are scored from their vectors in SQLite, streamed in batches, and chunks deleted since it was
written are dropped, so results always match the committed state.

Filters (`lang`, `path` globs with `!` exclusions) are applied inside the retrieval (an FTS5 join,
a FAISS id selector), so `k` hits come back whenever `k` chunks pass the filters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pathspec

from coarch.errors import CoarchError, IndexNotFoundError, ModelMismatchError, UsageError
from coarch.fusion import Ranked, fusion_for, query_kind
from coarch.identifiers import model_text, parse_identifier, query_terms
from coarch.rerank import RERANK_DEPTH, Candidate, rerank
from coarch.search_options import DEFAULT_K, MAX_K, MODES
from coarch.store import VECTOR_DTYPE, ChunkRow, Store, corruption_reported

if TYPE_CHECKING:
    from coarch.embedder import Embedder

log = logging.getLogger(__name__)


# Depth of each ranked list fused in hybrid mode: deep enough that a chunk ranked well by one
# retriever and moderately by the other is found, shallow enough to stay cheap.
FUSION_DEPTH = 100
# BM25 weights of the FTS5 columns (path_terms, symbol_terms, body_terms).
BM25_WEIGHTS = (0.5, 2.0, 1.0)
# Definition tiers (see _DefinitionMatcher.tier): a definition of tier t scores
# DEFINITION_TIERS - t plus its fused score, above every hit that is no definition.
DEFINITION_TIERS = 5
# At most this many chunks whose symbol mentions a queried identifier are examined.
DEFINITION_CANDIDATES = 500
# Vectors read per batch when scoring chunks the FAISS file does not cover.
TAIL_BATCH = 4096
# Threads of the query embedder. A query is a few dozen tokens: splitting that work costs more
# than it saves, and far more when the cores are busy (fp32, measured on 2 busy cores: 20 ms
# with 1 thread, 170 ms with 2; bf16, one thread, idle: 7 ms a query).
QUERY_THREADS = 1


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    `path` is relative to the indexed root (POSIX separators); lines are 1-based and inclusive.
    `score` is higher-is-better and only comparable within one search: cosine similarity in
    `semantic` mode, BM25 (sign flipped) in `keyword` mode, and in `hybrid` mode the fused and
    re-ranked score scaled to (0, 1], plus 1 to 5 for a definition of the identifier queried (so
    definitions come first, surest first). `snippet` is the chunk's source text.
    """

    path: str
    start_line: int
    end_line: int
    score: float
    language: str | None
    symbol: str | None
    snippet: str
    # Only when asked (search(..., explain=True)): the hit's rank and score in each retriever
    # ("semantic", "keyword": None when that list missed it), its fused score, the re-rank
    # rules that changed its score and by how much, and its definition tier (identifier
    # queries; None when it defines nothing queried).
    explain: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `--json`: the fields above, `explain` only when asked."""
        fields = asdict(self)
        if self.explain is None:
            del fields["explain"]
        return fields


# ---- filters ------------------------------------------------------------------------------------


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
        raise UsageError(f"invalid --path glob {glob!r}",
                         hint="globs follow .gitignore rules: close every `[` (`\\[` is a "
                              "literal one), keep ranges in order (`[a-z]`), `\\#` for a "
                              "leading #")


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
        raise UsageError(f"unknown language {name.strip()!r}",
                         hint="use a language, an alias or an extension (py, ts, kt); known "
                              "languages: " + ", ".join(known))
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


# ---- the embedder, once per process --------------------------------------------------------------

_EMBEDDERS: dict[tuple[str, int, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(
    model_path: Path, model_id: str, max_seq_length: int = 0, precision: str = "fp32"
) -> Embedder:
    """The process-wide Embedder of a model in a precision (loaded on first use, then reused):
    a long-lived process pays the model load once, whatever index it searches. Queries must be
    embedded in the precision of the index's vectors, hence the precision in the key."""
    key = (model_id, max_seq_length, precision)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            from coarch.embedder import Embedder

            embedder = Embedder(
                model_path,
                threads=QUERY_THREADS,
                max_seq_length=max_seq_length or None,
                precision=precision,
            )
            _EMBEDDERS[key] = embedder
        return embedder


_MODEL_IDS: dict[str, str] = {}


def _model_id_of(folder: Path) -> str:
    """coarch.models.model_id, computed once per folder and process (it hashes files)."""
    from coarch.models import model_id

    key = str(folder)
    if key not in _MODEL_IDS:
        _MODEL_IDS[key] = model_id(folder)
    return _MODEL_IDS[key]


# ---- FAISS ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _faiss_single_thread() -> Iterator[None]:
    """One query is too small to share: OpenMP start-up costs more than the scan (measured
    ~30 ms with 2 threads against ~3 ms with 1 on a 50,000-row flat index)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_faiss(path: Path) -> Any:
    """Opens a FAISS file read-only, memory-mapping the vectors where the index type allows
    (flat codes: IO_FLAG_MMAP_IFC; IVF lists: IO_FLAG_MMAP), else reading it whole."""
    import faiss

    read_only = getattr(faiss, "IO_FLAG_READ_ONLY", 0)
    attempts = [getattr(faiss, "IO_FLAG_MMAP_IFC", 0), getattr(faiss, "IO_FLAG_MMAP", 0)]
    for flag in attempts:
        if not flag:
            continue
        try:
            return faiss.read_index(str(path), flag | read_only)
        except RuntimeError as exc:
            log.debug("faiss mmap flag %#x refused for %s: %s", flag, path, exc)
    return faiss.read_index(str(path))


# ---- identifier queries -----------------------------------------------------------------------

# Words that introduce a definition, across the common languages.
_DEF_KEYWORDS = (
    r"def|class|function\*?|func|fn|fun|struct|enum|union|trait|interface|type|typedef|impl"
    r"|module|namespace|macro_rules!|sub|proc|object|record|protocol|newtype|let|const|var|val"
)
# Words that may stand before a definition keyword: `export default async function`,
# `pub(crate) fn`, `public static final class`.
_MODIFIERS = (
    r"export|default|public|private|protected|internal|static|abstract|final|sealed|open"
    r"|override|virtual|inline|extern|unsafe|async|pub(?:\([^)\n]*\))?|partial|declare"
    r"|readonly|data|inner|suspend|operator|const|mut|local|case|implicit|lazy"
)
# Languages whose functions are declared as `type name(args)` (no keyword): for these a line
# like that defines `name` unless it is a statement. Elsewhere such a line is a call (or prose).
_C_FAMILY_NAMES = "c cpp java csharp objective-c objective-cpp cuda dart glsl d solidity groovy"
_C_FAMILY = frozenset(_C_FAMILY_NAMES.split())
# First words of a C-family line that make it a statement, not a function head.
_STATEMENT_WORDS = """
return if while for switch else new throw case do sizeof delete await yield goto typeof
"""
_NOT_A_TYPE = frozenset(_STATEMENT_WORDS.split())


@functools.lru_cache(maxsize=256)
def _definition_pattern(names: tuple[str, ...], fold: bool, c_family: bool) -> re.Pattern[str]:
    """A line that defines one of `names`: `def name`, `class name`, `func (r T) name`,
    `pub fn name`, `export const name = (...) =>`, `name = lambda`, `#define name`, a
    JavaScript method head `name(args) {`, and in C-family languages `type name(args)` not
    ending in `;`. The keyword forms allow only modifiers before them, so prose in a comment
    or docstring ("uses the class Foo") does not count."""
    n = "(?:" + "|".join(re.escape(name) for name in names) + ")"
    ws = r"[^\S\n]"
    alternatives = [
        (
            rf"(?:@[\w.]+(?:\([^)\n]*\))?{ws}+)*(?:(?:{_MODIFIERS}){ws}+)*(?:{_DEF_KEYWORDS})"
            rf"{ws}+(?:\([^)\n]*\){ws}*)?[*&]?(?:[\w.]+\.)?{n}\b"
        ),
        rf"#{ws}*define{ws}+{n}\b",
        (
            rf"(?:(?:{_MODIFIERS}){ws}+)*(?:(?:const|let|var){ws}+)?(?:[\w.]+\.)?{n}{ws}*[:=]"
            rf"{ws}*(?:async{ws}+)?(?:function\b|\([^)\n]*\){ws}*=>|\w+{ws}*=>|lambda\b)"
        ),
        rf"(?:(?:{_MODIFIERS}|get|set){ws}+)*{n}{ws}*\([^)\n]*\){ws}*(?::[^{{\n]*)?\{{",
    ]
    if c_family:
        alternatives.append(
            rf"(?P<ctype>(?:[\w<>\[\],*&:~]+{ws}+)+)[*&]*(?:[\w:]+::)?~?{n}{ws}*\([^;\n]*$"
        )
    return re.compile(rf"^{ws}*(?:" + "|".join(alternatives) + ")", re.IGNORECASE if fold else 0)


def _definition_indent(
    pattern: re.Pattern[str], text: str, names: Sequence[str], fold: bool
) -> int | None:
    """Indentation of the first line of `text` that defines one of `names`, or None when no
    line does. The pattern runs only on the lines that contain a name at all (a substring
    test), which keeps it cheap on big chunks."""
    needles = [n.lower() for n in names] if fold else list(names)
    for line in text.splitlines():
        hay = line.lower() if fold else line
        if not any(n in hay for n in needles):
            continue
        match = pattern.match(line)
        if match is None:
            continue
        ctype = match.groupdict().get("ctype")
        if ctype is not None and ctype.split()[0] in _NOT_A_TYPE:
            continue
        return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())
    return None


# Type or template arguments in a definition's name (`LruCache<K, V>.get`, `Map<K, V>::find`):
# a query names the type without them. Only after a word character, so `operator<=` stays.
_TYPE_ARGUMENTS = re.compile(r"(?<=\w)<[^<>]*>")
_SCOPE_SEPARATORS = re.compile(r"\.|::")


def _segments(component: str) -> list[str]:
    """The scope path of one definition name: `HttpClient.send` -> [HttpClient, send],
    `Table<K, Map<A, B>>::put` -> [Table, put]."""
    bare = component
    if "operator" not in bare:
        while (stripped := _TYPE_ARGUMENTS.sub("", bare)) != bare:
            bare = stripped
    return [part for part in _SCOPE_SEPARATORS.split(bare) if part]


def _loose(name: str) -> str:
    """A name with case and underscores ignored: `parseConfig`, `parse_config` and
    `ParseConfig` compare equal (a query typed in another language's naming convention)."""
    return name.replace("_", "").lower()


class _DefinitionMatcher:
    """Decides whether a chunk defines the identifier queried, and how surely (its tier).

    `fold` False compares names as typed; True ignores case and underscores (a second pass,
    used only when the first finds nothing)."""

    def __init__(self, ident: str, fold: bool) -> None:
        self.fold = fold
        self.segments = [self._key(s) for s in ident.split(".")]
        self.last = ident.rsplit(".", 1)[-1]
        self.qualified = len(self.segments) > 1

    def _key(self, name: str) -> str:
        return _loose(name) if self.fold else name

    def _parts(self, component: str) -> list[str]:
        return [self._key(s) for s in _segments(component)]

    def _named(self, component: str) -> bool:
        parts = self._parts(component)
        return parts[-len(self.segments) :] == self.segments

    def _outer(self, component: str) -> bool:
        """The identifier is the component or its outermost scope (`Foo` in `Foo.bar`)."""
        parts = self._parts(component)
        return parts[: len(self.segments)] == self.segments

    def _segment(self, component: str) -> bool:
        parts = self._parts(component)
        width = len(self.segments)
        return any(parts[i : i + width] == self.segments for i in range(len(parts) - width))

    def _enclosing(self, component: str) -> bool:
        """The component is a scope around the identifier (`HttpClient` for
        `HttpClient.send`): its chunk may hold the definition of a small member."""
        parts = self._parts(component)
        return len(parts) < len(self.segments) and self.segments[: len(parts)] == parts

    def _definition_line(self, components: Sequence[str], row: ChunkRow) -> int | None:
        """Indentation of the chunk's definition line (None: it has none), the name spelled
        as typed (first pass) or as the chunk's symbol spells it (second pass)."""
        c_family = (row.language or "") in _C_FAMILY
        names: tuple[str, ...] = (self.last,)
        fold = False
        if self.fold:
            key = self.segments[-1]
            names = tuple(
                sorted({s for c in components for s in _segments(c) if _loose(s) == key})
            )
            if not names:
                names, fold = (self.last,), True
        pattern = _definition_pattern(names, fold, c_family)
        return _definition_indent(pattern, row.text, names, fold)

    def tier(self, row: ChunkRow) -> tuple[int, int] | None:
        """How surely `row` defines the identifier, or None when it does not: (tier, indent),
        lower is surer. `indent` is that of the definition line: within a tier, an outer
        definition (`class _patch_dict`) comes before a nested one of the same name (its
        method `def _patch_dict`). Tiers:

        0: its text has the definition line and its symbol is the identifier or starts with
           it (`Foo` or `Foo.__init__` for `Foo`: the identifier is the chunk's outer scope).
        1: its text has the definition line and its symbol ends with the identifier
           (`HttpClient.send` for `send`): a bare name prefers a top-level definition.
        2: its text has the definition line, and its symbol holds the identifier as a path
           segment inside, or encloses it (`def send` in the chunk of class `HttpClient`), or
           it has no symbol at all.
        3: its text has the definition line (an unqualified name defined inside something
           else).
        4: its symbol names the identifier but the definition line is in another chunk (a
           long body cut into pieces).
        """
        components = row.symbols
        named = any(self._named(c) for c in components)
        outer = any(self._outer(c) for c in components)
        segment = any(self._segment(c) or self._enclosing(c) for c in components)
        indent = self._definition_line(components, row)
        if indent is not None:
            if outer:
                return 0, indent
            if named:
                return 1, indent
            if segment or (not components and not self.qualified):
                return 2, indent
            if not self.qualified:
                return 3, indent
        if named:
            return 4, 0
        return None


# ---- the searcher ---------------------------------------------------------------------------------


class Searcher:
    """Searches one index folder. Opens SQLite read-only and the FAISS file memory-mapped; the
    model is loaded on the first semantic query and shared by every Searcher of the process.

    `model` overrides the model folder (it must be the one the index was built with).
    Not thread-safe: use one Searcher per thread.
    """

    def __init__(
        self, index_dir: str | os.PathLike[str], model: str | os.PathLike[str] | None = None
    ) -> None:
        self.index_dir = Path(index_dir)
        self._model_arg = model
        self.store = Store(self.index_dir, readonly=True)
        self._db_identity = _identity(self.store.path)
        self._faiss: Any = None
        self._faiss_key: tuple[object, ...] | None = None
        self._embedder_cache: tuple[tuple[str, str], Embedder] | None = None

    @property
    def dim(self) -> int:
        """Width of the index's vectors (0 until a first `coarch index` has loaded a model)."""
        return int(self.store.get_meta("dim") or 0)

    # -- lifecycle --

    def close(self) -> None:
        self._faiss = None
        self.store.close()

    def __enter__(self) -> Searcher:  # noqa: PYI034  (final class; no typing_extensions)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        mode: str = "hybrid",
        lang: str | Sequence[str] | None = None,
        path: str | Sequence[str] | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """The best `k` chunks for `query`, best first (see the module docstring). With
        `explain`, each hit carries why it is there (Hit.explain)."""
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        if not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be a positive integer, not {k!r}")
        filters = Filters.build(lang, path)
        if k > MAX_K:
            log.warning("at most %d hits are returned, not %d", MAX_K, k)
            k = MAX_K
        if not query.strip():
            return []
        self._follow_swap()
        with corruption_reported(self.index_dir):
            return self._search(query, k, mode, filters, explain)

    def _follow_swap(self) -> None:
        """Reopens the index when another file now sits at its path (a rebuild was swapped in,
        or the index was rebuilt from scratch); until then the open files keep answering."""
        now = _identity(self.store.path)
        if now is None or now == self._db_identity:
            return
        log.info("%s was replaced: reopening the index", self.store.path)
        fresh = Store(self.index_dir, readonly=True)
        self.store.close()
        self.store, self._db_identity = fresh, _identity(fresh.path)
        self._faiss, self._faiss_key = None, None

    def _search(self, query: str, k: int, mode: str, filters: Filters,
                explain: bool) -> list[Hit]:
        # One read transaction: FTS5, chunks and vectors all show the same committed state.
        with self.store.read_snapshot():
            self._register_filter(filters)
            if mode in ("keyword", "semantic"):
                retrieve = self._keyword if mode == "keyword" else self._semantic
                ranked = retrieve(query, k, filters)
                return self._hits(ranked.ids, ranked.scores, mode if explain else None)
            return self._hybrid(query, k, filters, explain)

    # -- retrieval --

    def rankings(self, query: str, depth: int = FUSION_DEPTH,
                 filters: Filters | None = None) -> tuple[Ranked, Ranked]:
        """The (semantic, keyword) rankings hybrid mode fuses, `depth` deep, read in one
        snapshot (for the evaluation's fusion sweep; a search needs none of this)."""
        filters = filters or Filters()
        self._follow_swap()
        with corruption_reported(self.index_dir), self.store.read_snapshot():
            self._register_filter(filters)
            return self._semantic(query, depth, filters), self._keyword(query, depth, filters)

    def _hybrid(self, query: str, k: int, filters: Filters, explain: bool) -> list[Hit]:
        depth = max(FUSION_DEPTH, k)
        keyword = self._keyword(query, depth, filters)
        semantic = self._semantic(query, depth, filters)
        fused = fusion_for(query_kind(query)).fuse(semantic, keyword)
        order = sorted(fused, key=lambda cid: (-fused[cid], cid))
        order, scores, rules = self._rerank(query, order, fused, k)

        ident = parse_identifier(query)
        definitions = self._definitions(ident, order, filters) if ident else []
        rows: list[ChunkRow] = []
        final_scores: list[float] = []
        tiers: dict[int, int] = {}
        for row, tier in definitions:
            if len(rows) == k:
                break
            rows.append(row)
            final_scores.append(float(DEFINITION_TIERS - tier[0]) + scores.get(row.id, 0.0))
            tiers[row.id] = tier[0]
        rest = [cid for cid in order if cid not in tiers][: k - len(rows)]
        by_id = {row.id: row for row in self.store.chunks_by_ids(rest)}
        for cid in rest:
            if cid in by_id:
                rows.append(by_id[cid])
                final_scores.append(scores[cid])
        if not explain:
            return [_hit(row, score) for row, score in zip(rows, final_scores)]
        ranks = {"semantic": _rank_table(semantic), "keyword": _rank_table(keyword)}
        return [
            _hit(row, score, {
                **{name: table.get(row.id) for name, table in ranks.items()},
                "fused": round(fused.get(row.id, 0.0), 6),
                "rules": rules.get(row.id, {}),
                "definition_tier": tiers.get(row.id),
            })
            for row, score in zip(rows, final_scores)
        ]

    def _rerank(self, query: str, order: list[int], fused: dict[int, float],
                k: int) -> tuple[list[int], dict[int, float], dict[int, dict[str, float]]]:
        """The fused order after coarch.rerank's rules over its top: (order, scores, the
        rules' score changes per chunk). Scores stay in (0, 1]."""
        top = order[: max(RERANK_DEPTH, k)]
        candidates = [
            Candidate(row.id, row.path, row.start_line, row.end_line, row.symbols, fused[row.id])
            for row in self.store.chunks_by_ids(top)
        ]
        reranked = rerank(query, candidates)
        scale = max([1.0, *(c.score for c in reranked)])
        scores = {c.id: c.score / scale for c in reranked}
        lowest = min(scores.values(), default=1.0)
        rest = order[len(top):]
        for cid in rest:  # below every re-ranked candidate, in fused order
            scores[cid] = min(fused[cid], lowest)
        rules = {c.id: c.rules for c in reranked if c.rules}
        return [c.id for c in reranked] + rest, scores, rules

    def _keyword(self, query: str, n: int, filters: Filters) -> Ranked:
        expr = query_terms(query)
        if not expr:
            return Ranked([], [])
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        join, where = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid, bm25(chunks_fts, {weights}) AS s FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY s LIMIT ?"
        )
        rows = self.store.conn.execute(sql, (expr, n)).fetchall()
        return Ranked([int(r[0]) for r in rows], [-float(r[1]) for r in rows])

    def _semantic(self, query: str, n: int, filters: Filters) -> Ranked:
        if self.dim <= 0 or not self._has_chunks():
            return Ranked([], [])
        vector = self._embed(query)
        found: dict[int, float] = {}
        index, covered_max = self._vector_index()
        allowed: np.ndarray | None = None
        if filters.active:
            # Only allowed ids are scored, so the top n are all hits that pass the filters.
            allowed = self._allowed_ids(filters)
            if allowed.size == 0:
                return Ranked([], [])
        if index is not None and index.ntotal > 0:
            found.update(self._faiss_search(index, vector, n, allowed, covered_max is not None))
        if covered_max is not None:
            for cid, score in self._scan_tail(vector, n, covered_max, filters):
                if score > found.get(cid, -np.inf):
                    found[cid] = score
        order = sorted(found, key=lambda cid: (-found[cid], cid))[:n]
        return Ranked(order, [found[c] for c in order])

    def _faiss_search(
        self, index: Any, vector: np.ndarray, n: int, allowed: np.ndarray | None, stale: bool
    ) -> list[tuple[int, float]]:
        """The best n live chunks in the FAISS file. A stale file may hold chunks deleted
        since it was written: those are dropped, fetching deeper until n live ones are found
        (the filter's id selector, built from SQLite, already leaves them out)."""
        import faiss

        params: Any = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
            inner = faiss.downcast_index(index)
            if isinstance(inner, faiss.IndexIVF):
                params = faiss.SearchParametersIVF()
                params.nprobe = inner.nprobe
            else:
                params = faiss.SearchParameters()
            params.sel = selector
            stale = False
        total = int(index.ntotal)
        want = min(n, total)
        while True:
            # shape: vector (1, dim) float32 -> scores, ids (1, want)
            with _faiss_single_thread():
                if params is None:
                    scores, ids = index.search(vector, want)
                else:
                    scores, ids = index.search(vector, want, params=params)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            if not stale:
                return hits
            live = self._live_ids([cid for cid, _ in hits])
            kept = [(cid, s) for cid, s in hits if cid in live]
            if len(kept) >= n or want >= total:
                return kept
            want = min(total, want * 4)

    def _scan_tail(
        self, vector: np.ndarray, n: int, after_id: int, filters: Filters
    ) -> list[tuple[int, float]]:
        """Scores the committed chunks with id > after_id (not in the FAISS file yet) from their
        vectors in SQLite, one batch at a time: memory stays at one batch plus the best n."""
        join, where = self._filter_sql(filters, "c.id", chunks_alias="c")
        sql = (
            f"SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            f"{join} WHERE c.id > ?{where}"
        )
        cursor = self.store.conn.execute(sql, (after_id,))
        best_ids = np.empty(0, dtype=np.int64)
        best_scores = np.empty(0, dtype=np.float32)
        query = vector[0]
        while rows := cursor.fetchmany(TAIL_BATCH):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            # shape: (len(rows), dim) float32
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE)
            vecs = vecs.reshape(len(rows), -1)
            if vecs.shape[1] != query.shape[0]:
                continue
            scores = vecs @ query
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, scores.astype(np.float32)])
            if best_ids.size > n:
                keep = np.argpartition(-best_scores, n)[:n]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        return [(int(i), float(s)) for i, s in zip(best_ids, best_scores)]

    def _definitions(
        self, ident: str, fused_order: list[int], filters: Filters
    ) -> list[tuple[ChunkRow, tuple[int, int]]]:
        """Chunks that define `ident`, best first: by (tier, indent), then fused rank, then
        position."""
        last = ident.rsplit(".", 1)[-1]
        expr = query_terms(last)
        if not expr:
            return []
        join, where = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY rank LIMIT ?"
        )
        # Chunks whose symbol holds the name; chunks without a symbol (languages chunked
        # without a grammar) that define it are among the fused hits, which keyword search
        # ranks by the exact identifier.
        exact = '"' + last.lower().replace('"', '""') + '"'
        candidates = [
            int(r[0])
            for r in self.store.conn.execute(
                sql, (f"{{symbol_terms}} : {exact}", DEFINITION_CANDIDATES)
            )
        ]
        ids = list(dict.fromkeys([*fused_order[:FUSION_DEPTH], *candidates]))
        rows = self.store.chunks_by_ids(ids)
        fused_rank = {cid: rank for rank, cid in enumerate(fused_order)}
        for fold in (False, True):
            matcher = _DefinitionMatcher(ident, fold)
            found = [(row, tier) for row in rows if (tier := matcher.tier(row)) is not None]
            if found:
                found.sort(
                    key=lambda rt: (
                        rt[1],
                        fused_rank.get(rt[0].id, len(fused_rank)),
                        rt[0].path,
                        rt[0].start_line,
                    )
                )
                return found
        return []

    # -- helpers --

    def _embed(self, query: str) -> np.ndarray:
        embedder = self._embedder()
        # The query in the form chunks were embedded in (identifiers split into words).
        vector = embedder.encode([model_text(query)])  # shape: (1, dim) float32, L2-normalised
        if vector.shape[1] != self.dim:
            raise ModelMismatchError(
                f"the model gives {vector.shape[1]}-wide vectors, the index holds {self.dim}",
                hint=f"run `coarch index --full {self.store.get_meta('root') or 'PATH'}`",
            )
        return np.ascontiguousarray(vector, dtype=np.float32)

    def _embedder(self) -> Embedder:
        """The embedder of the model the index was built with (checked by model id)."""
        from coarch.models import resolve_model_path

        meta = self.store.meta()
        indexed_id = meta.get("model_id")
        precision = self.store.precision() or "fp32"
        if self._embedder_cache is not None and self._embedder_cache[0] == (indexed_id, precision):
            return self._embedder_cache[1]
        if not indexed_id:
            raise IndexNotFoundError(
                f"the index at {self.index_dir} has no model recorded (never built?)",
                hint="run `coarch index PATH` first",
            )
        candidates: list[Path] = []
        if self._model_arg is not None:
            candidates.append(resolve_model_path(self._model_arg))
        else:
            recorded = meta.get("model_path")
            if recorded and Path(recorded).is_dir():
                candidates.append(Path(recorded))
            with contextlib.suppress(CoarchError):
                candidates.append(resolve_model_path(None))
        for folder in candidates:
            if _model_id_of(folder) == indexed_id:
                max_len = int(meta.get("max_seq_length") or 0)
                embedder = get_embedder(folder, indexed_id, max_len, precision)
                self._embedder_cache = ((indexed_id, precision), embedder)
                return embedder
        tried = candidates[0] if candidates else "no model folder"
        raise ModelMismatchError(
            f"index at {self.index_dir} was built with model {indexed_id}, not {tried}",
            hint=f"rebuild it: `coarch index --full {meta.get('root') or 'PATH'}`"
            + (" (or pass the same --model)" if self._model_arg is None else ""),
        )

    def _vector_index(self) -> tuple[Any, int | None]:
        """(FAISS index or None, id after which chunks must be scanned from SQLite or None).

        The FAISS file is reopened when a newer one has been put in place. A missing or
        unreadable file means every chunk is scanned from SQLite (correct, slower)."""
        from coarch import vectors as faiss_file

        meta = self.store.meta()
        path = faiss_file.faiss_path(self.index_dir)
        try:
            st = path.stat()
        except OSError:
            self._faiss, self._faiss_key = None, None
            return None, 0
        key = (meta.get("faiss_generation"), meta.get("faiss_checksum"), st.st_mtime_ns,
               st.st_ino)
        if self._faiss_key != key:
            self._faiss, self._faiss_key = None, key
            # Checked once per file opened: FAISS reads damaged bytes without complaint.
            if faiss_file.check_file(path, meta) in ("corrupt", "missing"):
                log.warning("%s is damaged: using the vectors in SQLite (run `coarch index`"
                            " to rewrite it)", path)
                return None, 0
            try:
                self._faiss = load_faiss(path)
            except RuntimeError as exc:
                log.warning("cannot read %s (%s): scanning vectors from SQLite", path, exc)
                return None, 0
            if self._faiss.d != self.dim:
                log.warning("%s has width %d, index %d: ignoring it", path, self._faiss.d, self.dim)
                self._faiss = None
        if self._faiss is None:
            return None, 0
        if meta.get("faiss_generation") == meta.get("generation"):
            return self._faiss, None
        try:
            covered = int(meta.get("faiss_max_chunk_id") or -1)
        except ValueError:
            covered = -1
        if covered < 0:
            return None, 0
        return self._faiss, covered

    def _has_chunks(self) -> bool:
        return self.store.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None

    def _allowed_ids(self, filters: Filters) -> np.ndarray:
        join, where = self._filter_sql(filters, "c.id", chunks_alias="c")
        sql = f"SELECT c.id FROM chunks c{join} WHERE 1{where}"
        ids = [r[0] for r in self.store.conn.execute(sql)]
        return np.asarray(ids, dtype=np.int64)

    def _live_ids(self, ids: list[int]) -> set[int]:
        live: set[int] = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            live.update(
                r[0]
                for r in self.store.conn.execute(
                    f"SELECT id FROM chunks WHERE id IN ({marks})", part
                )
            )
        return live

    def _register_filter(self, filters: Filters) -> None:
        matcher = filters.path_matcher()
        self.store.conn.create_function("coarch_path_ok", 1, matcher, deterministic=True)

    def _filter_sql(
        self, filters: Filters, id_column: str, chunks_alias: str | None = None
    ) -> tuple[str, str]:
        """(JOIN clause, AND-prefixed WHERE clause) restricting `id_column` to chunks that pass
        the filters; two empty strings when there are none."""
        if not filters.active:
            return "", ""
        join = ""
        c = chunks_alias
        if c is None:
            c = "fc"
            join += f" JOIN chunks fc ON fc.id = {id_column}"
        join += f" JOIN files ff ON ff.id = {c}.file_id"
        where = ""
        if filters.languages:
            quoted = ",".join(_sql_str(x) for x in sorted(filters.languages))
            where += f" AND lower(coalesce({c}.language, ff.language, '')) IN ({quoted})"
        if filters.includes or filters.excludes:
            where += " AND coarch_path_ok(ff.path)"
        return join, where

    def _hits(self, ids: list[int], scores: list[float],
              explained_mode: str | None = None) -> list[Hit]:
        """Hits of one retriever's ranking; with `explained_mode`, each tells its rank and
        score in it."""
        rows = self.store.chunks_by_ids(ids)
        score_of = dict(zip(ids, scores))
        if explained_mode is None:
            return [_hit(row, score_of[row.id]) for row in rows]
        table = _rank_table(Ranked(ids, scores))
        return [_hit(row, score_of[row.id], {explained_mode: table.get(row.id)})
                for row in rows]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when it is not there (mid-swap)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rank_table(ranked: Ranked) -> dict[int, dict[str, float]]:
    """{chunk id: {"rank": 1-based rank, "score": the retriever's score}} of one ranking."""
    return {cid: {"rank": rank, "score": round(score, 6)}
            for rank, (cid, score) in enumerate(zip(ranked.ids, ranked.scores), 1)}


def _hit(row: ChunkRow, score: float, explain: dict[str, Any] | None = None) -> Hit:
    return Hit(
        path=row.path,
        start_line=row.start_line,
        end_line=row.end_line,
        score=float(score),
        language=row.language,
        symbol=row.symbol,
        snippet=row.text,
        explain=explain,
    )
