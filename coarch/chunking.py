"""Source text -> chunks that follow definitions and never exceed the model's input length.

Pure: no I/O, no model. Token counts come from a callable (the model's C tokenizer in
production), so the guarantee "every chunk's embedded text has at most max_tokens tokens" is
checked with the same tokenizer the embedder truncates with: nothing is silently cut off.

How a file is cut:
1. Definitions (functions, classes, methods, impls...) come from a tree-sitter grammar for the
   languages that have one (see coarch.languages); comments, decorators and attributes right
   above a definition belong to it.
2. Inside a scope (the file, then a definition too big for one chunk) the lines are partitioned
   into definitions and the gaps between them. A unit that fits is a leaf; adjacent leaves are
   merged while they stay under `target_tokens`; a definition that does not fit is cut along
   its own sub-definitions, and what still does not fit is cut at line boundaries (preferring
   blank lines and shallow indentation), a line at word and then character boundaries.
3. Every chunk's embedded text is its header ("path: ...", "symbol: ...") plus its source, and
   is counted once more exactly; one over the limit is cut again. The indexer gives the model
   that text with identifiers split into words (coarch.identifiers.model_text) and counts
   tokens on that form, so the guarantee holds for what the model reads.
Languages without a grammar, and files a grammar fails on, use step 2 with no definitions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coarch.languages import ts_language

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
# 2: a chunk's symbols are a list (names may hold commas: `Map<K, V>`), stored as such.
# 3: the model reads embed_text with identifiers split into words (coarch.identifiers
#    .model_text, applied by the indexer): token counts and vectors change.
CHUNKER_VERSION = "3"


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
class _Def:
    """A definition found by the grammar: 0-based inclusive rows, children nested inside."""

    start: int
    end: int
    name: str
    children: list[_Def]


@dataclass(slots=True)
class _Piece:
    """A chunk before rendering: rows [start, end], its symbols, and its text when it is a part
    of one line (then start == end)."""

    start: int
    end: int
    symbols: tuple[str, ...]
    text: str | None = None


# ---- grammar queries -------------------------------------------------------------------------

# Each query captures a definition as @def and its name as @name (without @name the name is
# worked out by _declarator_name). Patterns are compiled one by one: one that a grammar version
# rejects is dropped, not fatal.
_QUERIES: dict[str, list[str]] = {
    "python": [
        "(function_definition name: (identifier) @name) @def",
        "(class_definition name: (identifier) @name) @def",
    ],
    "javascript": [
        "(function_declaration name: (identifier) @name) @def",
        "(generator_function_declaration name: (identifier) @name) @def",
        "(class_declaration name: (identifier) @name) @def",
        "(method_definition name: (_) @name) @def",
        ("(lexical_declaration (variable_declarator name: (identifier) @name"
         " value: [(arrow_function) (function_expression) (class)])) @def"),
        ("(variable_declaration (variable_declarator name: (identifier) @name"
         " value: [(arrow_function) (function_expression) (class)])) @def"),
        ("(expression_statement (assignment_expression left: (member_expression"
         " property: (property_identifier) @name) right: [(arrow_function) (function_expression)]))"
         " @def"),
    ],
    "java": [
        "(class_declaration name: (identifier) @name) @def",
        "(interface_declaration name: (identifier) @name) @def",
        "(enum_declaration name: (identifier) @name) @def",
        "(record_declaration name: (identifier) @name) @def",
        "(annotation_type_declaration name: (identifier) @name) @def",
        "(method_declaration name: (identifier) @name) @def",
        "(constructor_declaration name: (identifier) @name) @def",
    ],
    "go": [
        "(function_declaration name: (identifier) @name) @def",
        ("(method_declaration receiver: (parameter_list (parameter_declaration"
         " type: [(type_identifier) @recv (pointer_type (type_identifier) @recv)"
         " (generic_type type: (type_identifier) @recv)"
         " (pointer_type (generic_type type: (type_identifier) @recv))]))"
         " name: (field_identifier) @name) @def"),
        "(method_declaration name: (field_identifier) @name) @def",
        "(type_declaration (type_spec name: (type_identifier) @name)) @def",
    ],
    "c": [
        "(function_definition) @def",
        "(struct_specifier name: (type_identifier) @name body: (_)) @def",
        "(union_specifier name: (type_identifier) @name body: (_)) @def",
        "(enum_specifier name: (type_identifier) @name body: (_)) @def",
        ("(type_definition type: [(struct_specifier body: (_)) (union_specifier body: (_))"
         " (enum_specifier body: (_))] declarator: (type_identifier) @name) @def"),
    ],
    "cpp": [
        "(function_definition) @def",
        "(class_specifier name: (_) @name body: (_)) @def",
        "(struct_specifier name: (_) @name body: (_)) @def",
        "(union_specifier name: (_) @name body: (_)) @def",
        "(enum_specifier name: (_) @name body: (_)) @def",
        "(namespace_definition name: (_) @name) @def",
        ("(type_definition type: [(struct_specifier body: (_)) (class_specifier body: (_))"
         " (enum_specifier body: (_))] declarator: (type_identifier) @name) @def"),
    ],
    "rust": [
        "(function_item name: (identifier) @name) @def",
        "(function_signature_item name: (identifier) @name) @def",
        "(struct_item name: (type_identifier) @name) @def",
        "(enum_item name: (type_identifier) @name) @def",
        "(union_item name: (type_identifier) @name) @def",
        "(trait_item name: (type_identifier) @name) @def",
        "(mod_item name: (identifier) @name body: (_)) @def",
        "(macro_definition name: (identifier) @name) @def",
        "(impl_item type: (_) @name) @def",
    ],
}
_TS_EXTRA = [
    "(interface_declaration name: (type_identifier) @name) @def",
    "(type_alias_declaration name: (type_identifier) @name) @def",
    "(enum_declaration name: (identifier) @name) @def",
    "(abstract_class_declaration name: (type_identifier) @name) @def",
    "(class_declaration name: (type_identifier) @name) @def",
    "(internal_module name: (_) @name) @def",
    "(function_signature name: (identifier) @name) @def",
    "(abstract_method_signature name: (_) @name) @def",
]
_QUERIES["typescript"] = _QUERIES["javascript"] + _TS_EXTRA
_QUERIES["tsx"] = _QUERIES["typescript"]
_QUERIES["cuda"] = _QUERIES["cpp"]

# Nodes just above a definition that belong to it (when on the line right above).
_LEADING = frozenset({
    "comment", "line_comment", "block_comment", "attribute_item", "inner_attribute_item",
    "decorator", "annotation", "marker_annotation",
})
# Parents whose first line belongs to the definition they wrap.
_WRAPPERS = frozenset({
    "decorated_definition", "template_declaration", "export_statement",
})
_DECLARATOR_NAMES = frozenset({
    "identifier", "field_identifier", "qualified_identifier", "destructor_name",
    "operator_name", "operator_cast", "template_function",
})


class _Grammar:
    """A tree-sitter parser and its compiled definition queries for one language."""

    def __init__(self, language: str, ts_lang: Any) -> None:
        import tree_sitter

        self.parser = tree_sitter.Parser(ts_lang)
        self.queries: list[Any] = []
        for pattern in _QUERIES.get(language, []):
            try:
                self.queries.append(tree_sitter.Query(ts_lang, pattern))
            except (tree_sitter.QueryError, ValueError, SyntaxError) as exc:
                log.debug("%s grammar: pattern dropped (%s): %s", language, exc, pattern)
        self._cursor = tree_sitter.QueryCursor

    def definitions(self, source: bytes) -> list[_Def]:
        """Top-level definitions of `source`, each with its nested ones."""
        tree = self.parser.parse(source)
        found: dict[tuple[int, int], tuple[int, int, str]] = {}
        for query in self.queries:
            for _, caps in self._cursor(query).matches(tree.root_node):
                node = caps["def"][0]
                key = (node.start_byte, node.end_byte)
                if key in found:
                    continue
                name = _node_name(caps, node)
                if not name:
                    continue
                start, end = _rows(node)
                found[key] = (start, end, name)
        # Nest by containment: sorted by start, longest first, a stack of open definitions.
        roots: list[_Def] = []
        stack: list[tuple[int, _Def]] = []  # (end_byte, def)
        for (sbyte, ebyte), (start, end, name) in sorted(found.items(),
                                                          key=lambda kv: (kv[0][0], -kv[0][1])):
            d = _Def(start, end, name, [])
            while stack and stack[-1][0] < ebyte:
                stack.pop()
            if stack:
                stack[-1][1].children.append(d)
            else:
                roots.append(d)
            stack.append((ebyte, d))
        return roots


def _text(node: Any) -> str:
    raw: bytes = node.text or b""
    return raw.decode("utf-8", errors="replace")


def _node_name(caps: dict[str, list[Any]], node: Any) -> str | None:
    names = caps.get("name")
    if names:
        name = " ".join(_text(names[0]).split())
        recv = caps.get("recv")
        return f"{_text(recv[0])}.{name}" if recv else name
    return _declarator_name(node)


def _declarator_name(node: Any) -> str | None:
    """Name of a C/C++ function_definition: follow `declarator` fields down to the name."""
    current = node.child_by_field_name("declarator")
    for _ in range(16):
        if current is None:
            return None
        if current.type in _DECLARATOR_NAMES:
            return " ".join(_text(current).split())
        nxt = current.child_by_field_name("declarator")
        if nxt is None:
            for child in current.named_children:
                if child.type in _DECLARATOR_NAMES:
                    return " ".join(_text(child).split())
            return None
        current = nxt
    return None


def _rows(node: Any) -> tuple[int, int]:
    """0-based inclusive rows of a definition, widened to its wrapper and leading comments."""
    outer = node
    while outer.parent is not None and outer.parent.type in _WRAPPERS:
        outer = outer.parent
    start = outer.start_point.row
    end = node.end_point.row
    if node.end_point.column == 0 and end > node.start_point.row:
        end -= 1
    prev = outer.prev_named_sibling
    while prev is not None and prev.type in _LEADING and _last_row(prev) >= start - 1:
        if prev.start_point.row == _last_row(prev) and _shares_line_with_code(prev):
            break
        start = prev.start_point.row
        prev = prev.prev_named_sibling
    return start, end


def _last_row(node: Any) -> int:
    """Last row holding text of `node` (a line comment may end at column 0 of the next row)."""
    end = node.end_point
    return int(end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row)


def _shares_line_with_code(comment: Any) -> bool:
    """A trailing comment on a code line (`x = 1  # note`) belongs to that line, not below."""
    before = comment.prev_sibling
    return before is not None and _last_row(before) == comment.start_point.row \
        and before.end_point.column > 0


# ---- the chunker -----------------------------------------------------------------------------

_WORD = re.compile(r"\S+\s*|\s+")
_CLOSER = re.compile(r"^\s*(?:[}\])]|end\b|fi\b|done\b|esac\b)")


class Chunker:
    """Cuts files into chunks of at most `max_tokens` tokens (embedded text, header included,
    as counted by `count_tokens`, which counts the model's special tokens too).

    `target_tokens` is the size up to which small neighbouring units are merged. One Chunker
    keeps parsers; use it from one thread at a time."""

    def __init__(self, count_tokens: TokenCounter, max_tokens: int,
                 target_tokens: int | None = None) -> None:
        self.count_tokens = count_tokens
        self.special = count_tokens("")
        if max_tokens - self.special < 16:
            raise ValueError(f"max_tokens {max_tokens} leaves no room for text")
        self.max_tokens = max_tokens
        self.target_tokens = min(target_tokens or max_tokens * 3 // 4, max_tokens)
        self._grammars: dict[str, _Grammar | None] = {}
        self._header_cache: dict[tuple[str, ...], int] = {}

    def describe(self) -> str:
        """What decides the chunks; stored in the index so that a change re-chunks files."""
        return f"v{CHUNKER_VERSION} max={self.max_tokens} target={self.target_tokens}"

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
        self._ltok = [self._line_tokens(line) for line in lines]
        self._prefix = [0]
        for n in self._ltok:
            self._prefix.append(self._prefix[-1] + n)
        defs = self._definitions(language, text)
        if defs is None:
            pieces = self._split_rows(0, len(lines) - 1, (), self.max_tokens)
        else:
            pieces = self._scope(0, len(lines) - 1, None, defs)
        chunks: list[Chunk] = []
        for piece in pieces:
            for fitted, tokens in self._fit(piece):
                chunk = self._render(fitted, language, tokens)
                if chunk is not None:
                    chunks.append(chunk)
        del self._lines, self._ltok, self._prefix
        return chunks

    # ---- counting ----------------------------------------------------------------------------

    def _line_tokens(self, line: str) -> int:
        if not line or line.isspace():
            return 0
        return self.count_tokens(line) - self.special

    def _rows_tokens(self, start: int, end: int) -> int:
        return self._prefix[end + 1] - self._prefix[start]

    def _header_tokens(self, symbols: tuple[str, ...]) -> int:
        n = self._header_cache.get(symbols)
        if n is None:
            n = self.count_tokens(chunk_header(self._path, symbol_text(symbols))) - self.special
            self._header_cache[symbols] = n
        return n

    def _budget(self, symbols: tuple[str, ...]) -> int:
        """Source tokens a chunk with these symbols may hold."""
        return self.max_tokens - self.special - self._header_tokens(symbols)

    # ---- structure ---------------------------------------------------------------------------

    def _definitions(self, language: str | None, text: str) -> list[_Def] | None:
        if language is None:
            return None
        if language not in self._grammars:
            ts_lang = ts_language(language)
            self._grammars[language] = _Grammar(language, ts_lang) if ts_lang else None
        grammar = self._grammars[language]
        if grammar is None:
            return None
        try:
            return grammar.definitions(text.encode("utf-8", errors="surrogatepass"))
        except Exception as exc:  # noqa: BLE001  (a grammar bug must not stop indexing)
            log.warning("%s: %s parse failed (%s); using the line-based chunker",
                        self._path, language, exc)
            return None

    def _scope(self, start: int, end: int, symbol: str | None,
               defs: Sequence[_Def]) -> list[_Piece]:
        """Pieces covering rows [start, end] of a scope whose nested definitions are `defs`."""
        units: list[tuple[int, int, str | None, _Def | None]] = []
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

        out: list[_Piece] = []
        group: list[tuple[int, int, str | None, bool]] = []
        group_tokens = 0

        def flush() -> None:
            nonlocal group, group_tokens
            if group:
                out.append(_Piece(group[0][0], group[-1][1], _merged_symbols(group, symbol)))
            group, group_tokens = [], 0

        for u_start, u_end, u_symbol, unit_def in units:
            tokens = self._rows_tokens(u_start, u_end)
            if tokens > self._budget(_names(u_symbol)):
                flush()
                if unit_def is not None and unit_def.children:
                    out.extend(self._scope(u_start, u_end, u_symbol, unit_def.children))
                else:
                    out.extend(self._split_rows(u_start, u_end, _names(u_symbol),
                                                self.max_tokens))
                continue
            candidate = [*group, (u_start, u_end, u_symbol, unit_def is not None)]
            merged = _merged_symbols(candidate, symbol)
            total = group_tokens + tokens + self.special + self._header_tokens(merged)
            if group and total > self.target_tokens:
                flush()
                candidate = [(u_start, u_end, u_symbol, unit_def is not None)]
            group = candidate
            group_tokens += tokens
        flush()
        return out

    def _split_rows(self, start: int, end: int, symbols: tuple[str, ...],
                    limit: int) -> list[_Piece]:
        """Cuts rows [start, end] into pieces of at most `limit` tokens (embedded), at the best
        line boundary in the second half of what fits: a shallow line after a blank one."""
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
            cut = self._best_cut(i, j - 1)
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
        header = chunk_header(self._path, symbol_text(piece.symbols))
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
                texts = [text[: len(text) // 2], text[len(text) // 2:]]
            parts = [_Piece(piece.start, piece.end, piece.symbols, t) for t in texts if t]
        return [fitted for part in parts for fitted in self._fit(part)]

    def _piece_text(self, piece: _Piece) -> str:
        if piece.text is not None:
            return piece.text
        return "\n".join(self._lines[piece.start: piece.end + 1])

    def _render(self, piece: _Piece, language: str | None, tokens: int) -> Chunk | None:
        """The chunk of a piece, blank edge lines trimmed (whitespace holds no tokens, so
        `tokens` stays exact); None when nothing but whitespace is left."""
        start, end = piece.start, piece.end
        header = chunk_header(self._path, symbol_text(piece.symbols))
        if piece.text is None:
            while start <= end and not self._lines[start].strip():
                start += 1
            while end >= start and not self._lines[end].strip():
                end -= 1
            if start > end:
                return None
            text = "\n".join(self._lines[start: end + 1])
            trimmed = self._lines[piece.start: start] + self._lines[end + 1: piece.end + 1]
            if not all(line.isascii() for line in trimmed):  # Unicode "spaces" may be tokens
                tokens = self.count_tokens(header + text)
        else:
            text = piece.text
            if not text.strip():
                return None
        return Chunk(path=self._path, start_line=start + 1, end_line=end + 1, language=language,
                     symbols=piece.symbols, text=text, embed_text=header + text, tokens=tokens)


def _names(symbol: str | None) -> tuple[str, ...]:
    return (symbol,) if symbol else ()


def _merged_symbols(group: Sequence[tuple[int, int, str | None, bool]],
                    scope_symbol: str | None) -> tuple[str, ...]:
    """Symbols of merged units: the definitions' names, else the scope's."""
    names = tuple(sym for _, _, sym, is_def in group if is_def and sym)
    return names or _names(scope_symbol)
