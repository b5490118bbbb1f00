"""The tree-sitter side of chunking: a file's definitions, and the statements of a node.

A `Grammar` holds one language's parser and its definition queries (coarch/queries/*.scm, see
coarch.languages) and finds each definition's rows, name and nested definitions. `statements`
and `preamble_end` read a syntax tree for the chunker's cut points, the same way for every
grammar. Used only by coarch.chunking.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coarch.languages import definition_patterns, script_language

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Definition:
    """A definition found by the grammar: 0-based inclusive rows (`start` with its leading
    comments, `head` where its own node begins), children nested inside, and its node (whose
    statements are the cut points when it has to be split)."""

    start: int
    end: int
    name: str
    children: list[Definition]
    head: int
    node: Any


# ---- grammar queries -------------------------------------------------------------------------

# A definition's first row (leading comments included), last row, name, head row (its own
# first line, wrapper and annotations included) and node.
_Found = tuple[int, int, str, int, Any]

# The definition queries are data: coarch/queries/<language>.scm (see languages.py). Each
# pattern captures a definition as @def and its name as @name (several @name nodes are joined
# with spaces; without @name the name is worked out by declarator_name); @inject marks a
# block whose text is parsed in another language (Vue and Svelte <script>), its definitions
# nested in the block's.
# Nodes just above a definition that belong to it (when on the line right above).
LEADING = frozenset(
    {
        "comment",
        "line_comment",
        "block_comment",
        "multiline_comment",
        "attribute_item",
        "inner_attribute_item",
        "decorator",
        "annotation",
        "marker_annotation",
        "attribute_list",
        "haddock",
    }
)
# Parents whose first line belongs to the definition they wrap.
_WRAPPERS = frozenset(
    {
        "decorated_definition",
        "template_declaration",
        "export_statement",
    }
)
_DECLARATOR_NAMES = frozenset(
    {
        "identifier",
        "field_identifier",
        "qualified_identifier",
        "destructor_name",
        "operator_name",
        "operator_cast",
        "template_function",
    }
)


class Grammar:
    """A tree-sitter parser and its compiled definition queries for one language."""

    def __init__(
        self, language: str, ts_lang: Any, embedded: Callable[[str], Grammar | None]
    ) -> None:
        import tree_sitter

        self.language = language
        self.parser = tree_sitter.Parser(ts_lang)
        # Only grammars that have a wrapper node pay for looking up each definition's parent
        # (a node's parent is found by descending from the root).
        self.wrappers = frozenset(
            kind for kind in _WRAPPERS if ts_lang.id_for_node_kind(kind, True) is not None
        )
        # Each pattern is compiled alone first: one that this grammar version rejects is
        # dropped, not fatal. The rest run as one query, one pass over the tree (one pass per
        # pattern made TypeScript's 15 patterns chunk at a quarter of Python's speed).
        valid: list[str] = []
        for pattern in definition_patterns(language):
            try:
                tree_sitter.Query(ts_lang, pattern)
                valid.append(pattern)
            except (tree_sitter.QueryError, ValueError, SyntaxError) as exc:
                log.debug("%s grammar: pattern dropped (%s): %s", language, exc, pattern)
        self.queries: list[Any] = [tree_sitter.Query(ts_lang, "\n".join(valid))] if valid else []
        self._cursor = tree_sitter.QueryCursor
        self._range = tree_sitter.Range
        self._embedded = embedded
        self._ranged: Any = None

    def definitions(self, source: bytes) -> tuple[Any, list[Definition]]:
        """The root node of `source`'s tree and its top-level definitions, each with its nested
        ones."""
        tree = self.parser.parse(source)
        return tree.root_node, _nest(self._collect(tree, source, source.split(b"\n")))

    def _collect(
        self, tree: Any, source: bytes, lines: Sequence[bytes]
    ) -> dict[tuple[int, int], _Found]:
        """Every definition of a parse tree by its byte span: (first row, last row, name,
        head row, node). `lines` are the source's."""
        found: dict[tuple[int, int], _Found] = {}
        pattern_of: dict[tuple[int, int], int] = {}
        for query in self.queries:
            for pattern, caps in self._cursor(query).matches(tree.root_node):
                node = caps["def"][0]
                key = node.byte_range
                seen = pattern_of.get(key)
                if seen is not None and seen <= pattern:
                    continue  # an earlier pattern of the file named this node already
                name = _node_name(caps, node)
                if not name:
                    continue
                start, head, end = _rows(node, lines, self.wrappers)
                found[key] = (start, end, name, head, node)
                pattern_of[key] = pattern
                for block in caps.get("inject", ()):
                    found.update(self._collect_embedded(node, block, source, lines))
        return found

    def _collect_embedded(
        self, owner: Any, block: Any, source: bytes, lines: Sequence[bytes]
    ) -> dict[tuple[int, int], _Found]:
        """Definitions inside `block`, parsed in the language its element's start tag names;
        rows and bytes stay those of the whole file."""
        tag = owner.named_children[0] if owner.named_children else owner
        grammar = self._embedded(script_language(_text(tag)))
        if grammar is None or block.end_byte <= block.start_byte:
            return {}
        parser = grammar._ranged_parser()
        parser.included_ranges = [
            self._range(block.start_point, block.end_point, block.start_byte, block.end_byte)
        ]
        return grammar._collect(parser.parse(source), source, lines)

    def _ranged_parser(self) -> Any:
        """A second parser for embedded blocks: its included ranges change per block, while
        `parser` keeps parsing whole files."""
        if self._ranged is None:
            import tree_sitter

            self._ranged = tree_sitter.Parser(self.parser.language)
        return self._ranged


def _nest(found: dict[tuple[int, int], _Found]) -> list[Definition]:
    """Definitions nested by containment: sorted by start, longest first, a stack of open
    definitions."""
    roots: list[Definition] = []
    stack: list[tuple[int, Definition]] = []  # (end_byte, def)
    for (_, ebyte), (start, end, name, head, node) in sorted(
        found.items(), key=lambda kv: (kv[0][0], -kv[0][1])
    ):
        d = Definition(start, end, name, [], head, node)
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
        if len(names) == 1:  # the usual case, without the sort
            name = " ".join(_text(names[0]).strip("\"'`").split())
        else:
            parts = (_text(n).strip("\"'`") for n in sorted(names, key=lambda n: n.start_byte))
            name = " ".join(" ".join(parts).split())
        recv = caps.get("recv")
        return f"{_text(recv[0])}.{name}" if recv else name
    return declarator_name(node)


def declarator_name(node: Any) -> str | None:
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


def _rows(node: Any, lines: Sequence[bytes], wrappers: frozenset[str]) -> tuple[int, int, int]:
    """0-based inclusive rows of a definition: its first row, widened to its wrapper and
    leading comments; its head row, widened to the wrapper only; its last row. `lines` are
    the source's, `wrappers` the grammar's wrapper node types."""
    # Each attribute read of a node builds a Python object (and a parent or previous sibling
    # is found by a walk): read each one once, and only when it can change the answer.
    outer = node
    if wrappers:
        parent = node.parent
        while parent is not None and parent.type in wrappers:
            outer, parent = parent, parent.parent
    start = head = outer.start_point.row
    end_row, end_column = node.end_point
    end = end_row - 1 if end_column == 0 and end_row > node.start_point.row else end_row
    if start == 0 or not lines[start - 1].strip():
        return start, head, end  # a comment that ends above a blank line is not attached
    prev = outer.prev_named_sibling
    while prev is not None and prev.type in LEADING and last_row(prev) >= start - 1:
        if prev.start_point.row == last_row(prev) and _shares_line_with_code(prev):
            break
        start = prev.start_point.row
        prev = prev.prev_named_sibling
    return start, head, end


def last_row(node: Any) -> int:
    """Last row holding text of `node` (a line comment may end at column 0 of the next row)."""
    end = node.end_point
    return int(end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row)


def _shares_line_with_code(comment: Any) -> bool:
    """A trailing comment on a code line (`x = 1  # note`) belongs to that line, not below."""
    before = comment.prev_sibling
    return (
        before is not None
        and last_row(before) == comment.start_point.row
        and before.end_point.column > 0
    )


# How far below a node `statements` looks for the block holding its statements, and over how
# many nodes at most (a huge literal holds no statements worth the walk).
_BLOCK_DEPTH = 4
_BLOCK_NODES = 512


def statements(node: Any, lines: Sequence[str]) -> list[Any]:
    """The statements of a definition or of the file, grammar-independently: the named children
    that begin their own line, of the node at or below `node` (within _BLOCK_DEPTH levels)
    whose two or more such children span the most rows: a function's block, a class's body,
    the file's root, and not the two annotations above a class or a nested `if`'s block.
    Empty when there is none."""
    best: list[Any] = []
    best_span = 0
    level = [node]
    visited = 0
    for _ in range(_BLOCK_DEPTH + 1):
        below: list[Any] = []
        for candidate in level:
            children = candidate.named_children
            starting = [c for c in children if _begins_line(c, lines)]
            if len(starting) >= 2:
                span = starting[-1].end_point.row - starting[0].start_point.row
                if span > best_span:
                    best, best_span = starting, span
            below.extend(children)
            visited += len(children)
        if visited > _BLOCK_NODES:
            break
        level = below
    return best


# Top-level nodes of a file's preamble, across grammars: comments (a license), the package or
# namespace line, imports, includes, `use` and `using` lines, file annotations.
_PREAMBLE = re.compile(
    r"comment|package|import|using|include|use_declaration|extern_crate"
    r"|namespace_use|file_annotation|shebang"
)


def preamble_end(root: Any) -> int:
    """Last row of the file's preamble: its leading comments, package, imports and the like
    (a Python module's docstring too); -1 when the file does not begin with one."""
    end = -1
    for index, child in enumerate(root.named_children):
        docstring = (
            index == 0
            and child.type == "expression_statement"
            and child.named_child_count == 1
            and child.named_children[0].type == "string"
        )
        if not (docstring or _PREAMBLE.search(child.type)):
            break
        end = last_row(child)
    return end


def _begins_line(node: Any, lines: Sequence[str]) -> bool:
    """Whether only whitespace precedes `node` on its first line (columns are bytes, so a
    non-ASCII indent never matches: such a line is simply not a cut point)."""
    row, column = node.start_point
    line: str = lines[row] if row < len(lines) else ""
    return bool(column == len(line) - len(line.lstrip()))
