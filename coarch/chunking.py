"""Source text -> chunks that follow definitions and never exceed the model's input length.

Pure: no I/O, no model. Token counts come from a callable (the model's C tokenizer in
production, which also counts all lines of a file in one call), so the guarantee "every chunk's
embedded text has at most max_tokens tokens" is checked with the same tokenizer the embedder
truncates with: nothing is silently cut off.

How a file is cut:
1. Definitions (functions, classes, methods, impls...) come from a tree-sitter grammar for the
   languages that have one (coarch.chunk_syntax, coarch.languages); comments, decorators and
   attributes right above a definition belong to it.
2. Inside a scope (the file, then a definition too big for one chunk) the lines are partitioned
   into definitions and the gaps between them. A unit that fits is a leaf; adjacent leaves are
   merged while they stay under `target_tokens`; a definition that does not fit is cut along
   its own sub-definitions. What still does not fit (a definition without sub-definitions, or
   the code between definitions, like a long run of imports) is cut before one of its
   statements, as the grammar sees them: the latest that keeps the piece within the budget,
   a statement itself too big cut along its own; without one, at line boundaries (preferring
   blank lines and shallow indentation), a line at word and then character boundaries.
3. Every chunk's embedded text is its header ("path: ...", "symbol: ...") plus its source, and
   is counted once more exactly; one over the limit is cut again. The indexer gives the model
   that text with identifiers split into words (coarch.identifiers.model_text) and counts
   tokens on that form, so the guarantee holds for what the model reads.
Languages without a grammar, and files a grammar fails on, use step 2 with no definitions.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coarch import chunk_syntax
from coarch.chunk_syntax import LEADING, Definition, Grammar, last_row
from coarch.languages import ts_language

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
# Token counts of each line of a text (text.split("\n")), as a TokenCounter gives each alone.
LineCounter = Callable[[str], list[int]]
# Bumped whenever chunk boundaries, symbols or their stored form change, or what the model reads
# for a chunk (coarch.chunk_vectors): every file of an existing index is then chunked again
# (vectors whose cache key is unchanged are re-used).
CHUNKER_VERSION = "5"
# Small neighbouring units are merged up to MERGE_EIGHTHS eighths of the model's input (96 of
# all-MiniLM-L6-v2's 256 tokens) by default. Measured with scripts/eval_search.py (800
# description queries in Python, C, JavaScript and Java): against 6/8, 3/8 read 52 lines to the
# first hit instead of 72 (p50, mean over languages) with hybrid file MRR@10 0.696 instead of
# 0.684; 2/8 gained little more (48 lines, 0.703) for 10 % more indexing time, against 3 %.
MERGE_EIGHTHS = 3
# Larger texts are cut by lines only: a grammar's syntax tree and query matches take about
# 22 bytes per byte of source (a 20 MB Python file: 593 MB at peak with the grammar, 160 MB
# without), and a file this large is almost always generated.
GRAMMAR_MAX_CHARS = 2_000_000


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a file. Lines are 1-based and inclusive; `text` is the source (for snippets
    and keyword search); `embed_text` is what the model sees: header + source."""

    path: str
    start_line: int
    end_line: int
    language: str | None
    symbols: tuple[str, ...]  # the definitions it holds (several when merged), or its scope
    text: str
    embed_text: str
    tokens: int  # of embed_text, the model's special tokens included: at most max_tokens

    @property
    def symbol(self) -> str | None:
        """The symbols as people read them (and as the embedded header spells them)."""
        return symbol_text(self.symbols)


def symbol_text(symbols: Sequence[str]) -> str | None:
    """Symbols joined for reading: `HttpClient, retry_upload`; None when there are none. Only
    for display and embedding: a name may hold a comma itself (`Map<K, V>`)."""
    return ", ".join(symbols) if symbols else None


def chunk_header(path: str, symbol: str | None) -> str:
    """The lines put before a chunk's source in the embedded text."""
    return f"path: {path}\nsymbol: {symbol}\n" if symbol else f"path: {path}\n"


@dataclass(slots=True)
class _Piece:
    """A chunk before rendering: rows [start, end], its symbols, and its text when it is a part
    of one line (then start == end)."""

    start: int
    end: int
    symbols: tuple[str, ...]
    text: str | None = None


# ---- the chunker -----------------------------------------------------------------------------

_WORD = re.compile(r"\S+\s*|\s+")
_CLOSER = re.compile(r"^\s*(?:[}\])]|end\b|fi\b|done\b|esac\b)")


class Chunker:
    """Cuts files into chunks of at most `max_tokens` tokens (embedded text, header included,
    as counted by `count_tokens`, which counts the model's special tokens too).

    `target_tokens` is the size up to which small neighbouring units are merged (default:
    MERGE_EIGHTHS eighths of `max_tokens`).
    `count_lines`, when given, counts all lines of a file in one call (the same counts as
    `count_tokens` line by line): a file costs one call into the tokenizer for its lines
    rather than one per line. One Chunker keeps parsers; use it from one thread at a time."""

    def __init__(
        self,
        count_tokens: TokenCounter,
        max_tokens: int,
        target_tokens: int | None = None,
        count_lines: LineCounter | None = None,
    ) -> None:
        self.count_tokens = count_tokens
        self.count_lines = count_lines
        self.special = count_tokens("")
        if max_tokens - self.special < 16:
            raise ValueError(f"max_tokens {max_tokens} leaves no room for text")
        self.max_tokens = max_tokens
        self.target_tokens = min(target_tokens or max_tokens * MERGE_EIGHTHS // 8, max_tokens)
        self._grammars: dict[str, Grammar | None] = {}
        self._header_cache: dict[tuple[str, ...], tuple[str, int]] = {}
        # Statements by node id, per file: the root's are asked for once per gap to cut.
        self._statement_cache: dict[int, list[Any]] = {}

    # ---- public ------------------------------------------------------------------------------

    def chunk(self, path: str, text: str, language: str | None) -> list[Chunk]:
        """Chunks of one file's text ("\\n" line ends), in order. Empty for a blank file."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not any(line.strip() for line in lines):
            return []
        self._lines = lines
        self._path = path
        self._header_cache.clear()  # header counts depend on the path: per file
        self._statement_cache.clear()
        self._ltok = self._lines_tokens(text, lines)
        self._prefix = [0]
        for n in self._ltok:
            self._prefix.append(self._prefix[-1] + n)
        parsed = self._definitions(language, text)
        if parsed is None:
            pieces = self._split_rows(0, len(lines) - 1, (), self.max_tokens)
        else:
            root, defs = parsed
            pieces = self._scope(0, len(lines) - 1, None, defs, root)
        chunks: list[Chunk] = []
        for piece in pieces:
            for fitted, tokens in self._fit(piece):
                chunk = self._render(fitted, language, tokens)
                if chunk is not None:
                    chunks.append(chunk)
        del self._lines, self._ltok, self._prefix
        self._statement_cache.clear()  # its nodes hold the tree
        return chunks

    # ---- counting ----------------------------------------------------------------------------

    def _lines_tokens(self, text: str, lines: Sequence[str]) -> list[int]:
        """Source tokens of each line (special tokens left out); a blank line holds none."""
        if self.count_lines is None:
            return [
                0 if not line or line.isspace() else self.count_tokens(line) - self.special
                for line in lines
            ]
        counts = self.count_lines(text)  # one more than `lines` when text ends with "\n"
        return [
            0 if not line or line.isspace() else count - self.special
            for line, count in zip(lines, counts)
        ]

    def _rows_tokens(self, start: int, end: int) -> int:
        return self._prefix[end + 1] - self._prefix[start]

    def _header(self, symbols: tuple[str, ...]) -> tuple[str, int]:
        """The embedded header of a chunk with these symbols and its tokens (special tokens
        left out). A header never takes more than half the model's input: a very long path or
        symbol keeps its last parts (the file name, the innermost name), so that every chunk
        still has room for its source."""
        cached = self._header_cache.get(symbols)
        if cached is None:
            path, symbol = self._path, symbol_text(symbols)
            limit = max(1, (self.max_tokens - self.special) // 2)
            header = chunk_header(path, symbol)
            tokens = self.count_tokens(header) - self.special
            while tokens > limit and (len(path) > 1 or (symbol and len(symbol) > 1)):
                if symbol and len(symbol) >= len(path):
                    symbol = symbol[len(symbol) // 2 :]
                else:
                    path = path[len(path) // 2 :]
                header = chunk_header(path, symbol)
                tokens = self.count_tokens(header) - self.special
            cached = self._header_cache[symbols] = (header, tokens)
        return cached

    def _header_tokens(self, symbols: tuple[str, ...]) -> int:
        return self._header(symbols)[1]

    def _budget(self, symbols: tuple[str, ...]) -> int:
        """Source tokens a chunk with these symbols may hold."""
        return self.max_tokens - self.special - self._header_tokens(symbols)

    # ---- structure ---------------------------------------------------------------------------

    def _definitions(self, language: str | None, text: str) -> tuple[Any, list[Definition]] | None:
        if language is None:
            return None
        if len(text) > GRAMMAR_MAX_CHARS:
            log.info(
                "%s: %d characters, over %d: cut by lines, not by definitions",
                self._path,
                len(text),
                GRAMMAR_MAX_CHARS,
            )
            return None
        grammar = self._grammar(language)
        if grammar is None:
            return None
        try:
            return grammar.definitions(text.encode("utf-8", errors="surrogatepass"))
        except Exception as exc:  # noqa: BLE001  (a grammar bug must not stop indexing)
            log.warning(
                "%s: %s parse failed (%s); using the line-based chunker", self._path, language, exc
            )
            return None

    def _grammar(self, language: str) -> Grammar | None:
        """The parser and queries of `language` (cached), or None when it has no grammar."""
        if language not in self._grammars:
            ts_lang = ts_language(language)
            self._grammars[language] = (
                Grammar(language, ts_lang, self._grammar) if ts_lang else None
            )
        return self._grammars[language]

    def _scope(
        self, start: int, end: int, symbol: str | None, defs: Sequence[Definition], node: Any
    ) -> list[_Piece]:
        """Pieces covering rows [start, end] of a scope (the file's root node, or a definition's
        node) whose nested definitions are `defs`."""
        units: list[tuple[int, int, str | None, Definition | None]] = []
        cursor = start
        for d in sorted(defs, key=lambda d: d.start):
            d_start, d_end = max(d.start, cursor), min(d.end, end)
            if d_start > d_end:
                continue  # shares its lines with the unit before it
            if d_start > cursor:
                units.append((cursor, d_start - 1, symbol, None))
            qualified = f"{symbol}.{d.name}" if symbol else d.name
            units.append((d_start, d_end, qualified, d))
            cursor = d_end + 1
        if cursor <= end:
            units.append((cursor, end, symbol, None))
        if node.parent is None and units and units[0][3] is None:
            # The file's preamble is a unit of its own: it stays whole (merged with what
            # follows only while both fit the target) rather than being cut mid-imports to
            # fill a chunk with the code after it.
            first, last = units[0][0], units[0][1]
            preamble_end = chunk_syntax.preamble_end(node)
            if first <= preamble_end < last:
                units[0:1] = [
                    (first, preamble_end, symbol, None),
                    (preamble_end + 1, last, symbol, None),
                ]

        out: list[_Piece] = []
        group: _Group | None = None
        for u_start, u_end, u_symbol, unit_def in units:
            tokens = self._rows_tokens(u_start, u_end)
            budget = self._budget(_names(u_symbol))
            if tokens > budget:
                if group is not None:
                    out.append(group.piece(symbol))
                    group = None
                if unit_def is not None and unit_def.children:
                    out.extend(
                        self._scope(u_start, u_end, u_symbol, unit_def.children, unit_def.node)
                    )
                    continue
                owner = node if unit_def is None else unit_def.node
                cuts = self._statement_rows(owner, u_start, u_end, budget)
                if unit_def is not None and u_start < unit_def.head <= u_end:
                    cuts.add(unit_def.head)  # between its leading comments and itself
                out.extend(
                    self._split_rows(
                        u_start, u_end, _names(u_symbol), self.max_tokens, sorted(cuts)
                    )
                )
                continue
            name = (u_symbol,) if unit_def is not None and u_symbol else ()
            if group is not None:
                merged = group.names + name or _names(symbol)
                total = group.tokens + tokens + self.special + self._header_tokens(merged)
                if total <= self.target_tokens:
                    group.add(u_end, name, tokens)
                    continue
                out.append(group.piece(symbol))
            group = _Group(u_start, u_end, name, tokens)
        if group is not None:
            out.append(group.piece(symbol))
        return out

    def _statement_rows(self, owner: Any, start: int, end: int, budget: int) -> set[int]:
        """Rows in (start, end] where a statement of `owner` begins (see
        chunk_syntax.statements), or the comments right above it, and, inside a statement too
        big for `budget`, where one of its own statements begins."""
        rows: set[int] = set()
        pending = [(owner, 0)]
        while pending:
            node, depth = pending.pop()
            previous_comment_end = -2
            found = self._statement_cache.get(node.id)
            if found is None:
                found = self._statement_cache[node.id] = chunk_syntax.statements(node, self._lines)
            for child in found:
                first, last = child.start_point.row, last_row(child)
                attached = first == previous_comment_end + 1  # a comment right above leads it
                previous_comment_end = last if child.type in LEADING else -2
                if last <= start or first > end:
                    continue
                if first > start and not attached:
                    rows.add(first)
                if (
                    depth < _STATEMENT_DEPTH
                    and last > first
                    and self._rows_tokens(max(first, start), min(last, end)) > budget
                ):
                    pending.append((child, depth + 1))
        return rows

    def _split_rows(
        self, start: int, end: int, symbols: tuple[str, ...], limit: int, cuts: Sequence[int] = ()
    ) -> list[_Piece]:
        """Cuts rows [start, end] into pieces of at most `limit` tokens (embedded): before the
        last row of `cuts` (sorted) that keeps the piece within the limit, else at the best line
        boundary in the second half of what fits: a shallow line after a blank one."""
        budget = min(limit, self.max_tokens) - self.special - self._header_tokens(symbols)
        out: list[_Piece] = []
        i = start
        while i <= end:
            total, j = 0, i
            while j <= end and total + self._ltok[j] <= budget:
                total += self._ltok[j]
                j += 1
            if j == i:  # one line over the budget: cut inside it
                out.extend(self._split_line(i, symbols, budget))
                i += 1
                continue
            if j > end:
                out.append(_Piece(i, end, symbols))
                break
            k = bisect.bisect_right(cuts, j) - 1
            cut = cuts[k] - 1 if k >= 0 and cuts[k] > i else self._best_cut(i, j - 1)
            out.append(_Piece(i, cut, symbols))
            i = cut + 1
        return out

    def _best_cut(self, first: int, last: int) -> int:
        """Row to end a piece on, within [first, last], preferring a cut before a shallow,
        non-closing line that follows a blank line, as late as possible."""
        lines = self._lines
        best, best_score = last, None
        lo = first + (last - first) // 2
        for k in range(last, lo - 1, -1):
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            if not nxt.strip():
                continue
            indent = len(nxt) - len(nxt.lstrip())
            score = (bool(_CLOSER.match(nxt)), indent, bool(lines[k].strip()))
            if best_score is None or score < best_score:
                best, best_score = k, score
        return best

    def _split_line(self, row: int, symbols: tuple[str, ...], budget: int) -> list[_Piece]:
        """Cuts one long line at word boundaries, and a long word at characters."""
        out: list[_Piece] = []
        current, current_tokens = "", 0
        for word in _WORD.findall(self._lines[row]):
            n = self.count_tokens(word) - self.special if word.strip() else 0
            if current and current_tokens + n > budget:
                out.append(_Piece(row, row, symbols, current))
                current, current_tokens = "", 0
            if n > budget:
                for part in self._split_chars(word, budget):
                    out.append(_Piece(row, row, symbols, part))
                continue
            current += word
            current_tokens += n
        if current.strip():
            out.append(_Piece(row, row, symbols, current))
        return out

    def _split_chars(self, word: str, budget: int) -> list[str]:
        """Cuts a string into the longest prefixes whose token count fits (binary search)."""
        parts: list[str] = []
        rest = word
        while rest:
            lo, hi = 1, len(rest)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count_tokens(rest[:mid]) - self.special <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            parts.append(rest[:lo])
            rest = rest[lo:]
        return parts

    # ---- rendering ---------------------------------------------------------------------------

    def _fit(self, piece: _Piece) -> list[tuple[_Piece, int]]:
        """The piece, or its parts when its exact count is over the limit (the per-line sums
        are an estimate; this is the check that makes the guarantee), with their exact
        counts."""
        text = self._piece_text(piece)
        header = self._header(piece.symbols)[0]
        exact = self.count_tokens(header + text)
        if exact <= self.max_tokens:
            return [(piece, exact)]
        over = exact - self.max_tokens
        if piece.text is None and piece.end > piece.start:
            estimate = self._rows_tokens(piece.start, piece.end)
            floor = self.special + self._header_tokens(piece.symbols) + 1
            limit = floor + estimate - over - 2
            parts = self._split_rows(piece.start, piece.end, piece.symbols, max(limit, floor))
        else:
            budget = max(1, self._budget(piece.symbols) - over - 1)
            texts = self._split_chars(text, budget)
            if len(texts) == 1:  # counts not additive here: halve until it splits
                texts = self._split_chars(text, max(1, min(budget, len(text)) // 2))
            if len(texts) == 1:
                texts = [text[: len(text) // 2], text[len(text) // 2 :]]
            parts = [_Piece(piece.start, piece.end, piece.symbols, t) for t in texts if t]
        return [fitted for part in parts for fitted in self._fit(part)]

    def _piece_text(self, piece: _Piece) -> str:
        if piece.text is not None:
            return piece.text
        return "\n".join(self._lines[piece.start : piece.end + 1])

    def _render(self, piece: _Piece, language: str | None, tokens: int) -> Chunk | None:
        """The chunk of a piece, blank edge lines trimmed (whitespace holds no tokens, so
        `tokens` stays exact); None when nothing but whitespace is left."""
        start, end = piece.start, piece.end
        header = self._header(piece.symbols)[0]
        if piece.text is None:
            while start <= end and not self._lines[start].strip():
                start += 1
            while end >= start and not self._lines[end].strip():
                end -= 1
            if start > end:
                return None
            text = "\n".join(self._lines[start : end + 1])
            trimmed = self._lines[piece.start : start] + self._lines[end + 1 : piece.end + 1]
            if not all(line.isascii() for line in trimmed):  # Unicode "spaces" may be tokens
                tokens = self.count_tokens(header + text)
        else:
            text = piece.text
            if not text.strip():
                return None
        return Chunk(
            path=self._path,
            start_line=start + 1,
            end_line=end + 1,
            language=language,
            symbols=piece.symbols,
            text=text,
            embed_text=header + text,
            tokens=tokens,
        )


# How deep _statement_rows looks into statements too big for one chunk: a function's
# statements, then the branches of an `if` or `when` among them, then theirs.
_STATEMENT_DEPTH = 2


def _names(symbol: str | None) -> tuple[str, ...]:
    return (symbol,) if symbol else ()


@dataclass(slots=True)
class _Group:
    """Adjacent units of a scope being merged into one piece: their rows, the names of the
    definitions among them, their source tokens."""

    start: int
    end: int
    names: tuple[str, ...]
    tokens: int

    def add(self, end: int, names: tuple[str, ...], tokens: int) -> None:
        self.end = end
        self.names += names
        self.tokens += tokens

    def piece(self, scope_symbol: str | None) -> _Piece:
        """The merged piece; its symbols are the definitions' names, else the scope's."""
        return _Piece(self.start, self.end, self.names or _names(scope_symbol))
