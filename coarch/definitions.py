"""Which chunks define an identifier queried (`parse_config`, `HttpClient.send`), and how surely.

coarch.search puts the definitions of a bare-identifier query first; this module decides what a
definition is. A chunk counts when a line of its text defines the name (`def name`, `class
name`, `func (r T) name`, `pub fn name`, `export const name = (...) =>`, `#define name`, and in
C-family languages `type name(args)`) or when its symbol names it (a long definition cut into
chunks); its tier (`_DefinitionMatcher.tier`) says how surely, from both. Names are first
compared as typed; when nothing matches, case and underscores are ignored (`parseConfig` finds
`parse_config`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from coarch.store import ChunkRow

# Tiers are 0 (surest) to DEFINITION_TIERS - 1 (see _DefinitionMatcher.tier).
DEFINITION_TIERS = 5

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
# C-family languages where a head ending in `;` is a definition too: an interface's or an
# abstract method (`boolean cancel(boolean mayInterrupt);`). In C and C++ it is a prototype,
# which declares what is defined elsewhere.
_DECLARING = frozenset({"java", "csharp"})
# First words of a C-family line that make it a statement, not a function head.
_STATEMENT_WORDS = """
return if while for switch else new throw case do sizeof delete await yield goto typeof
"""
# English words a comment line may start with before naming a function ("in resize() itself,
# as ..."): no language names a type so, and prose is no definition. Compared lowercased.
_PROSE_WORDS = """
a an the in of to from by with see and or as at on is are was like via call calls calling use
uses using then than when so but that this which where after before also only not it we you
"""
_NOT_A_TYPE = frozenset(_STATEMENT_WORDS.split()) | frozenset(_PROSE_WORDS.split())


@functools.lru_cache(maxsize=256)
def _definition_pattern(
    names: tuple[str, ...], fold: bool, c_family: bool, declaring: bool = False
) -> re.Pattern[str]:
    """A line that defines one of `names`: `def name`, `class name`, `func (r T) name`,
    `pub fn name`, `export const name = (...) =>`, `name = lambda`, `#define name`, a
    JavaScript method head `name(args) {`, and in C-family languages `type name(args)` not
    ending in `;` (in Java and C# also ending in `;`: an interface's or abstract method) and
    `name(args)` at the very start of a line (the GNU style). The keyword forms allow only
    modifiers before them, so prose in a comment or docstring ("uses the class Foo") does not
    count, nor does a `type name(` whose "type" is an English word ("in resize() itself")."""
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
    head = rf"^{ws}*(?:" + "|".join(alternatives)
    if c_family:
        rest = r"[^\n]*$" if declaring else r"[^;\n]*$"
        head += (
            rf"|(?P<ctype>(?:[\w<>\[\],*&:~]+{ws}+)+)[*&]*(?:[\w:]+::)?~?{n}{ws}*\({rest})"
            # The GNU and BSD style puts the return type on a line of its own and the name at
            # the start of the next (`static int\nresize(bitarrayobject *self, ...)`); at the
            # line's very start, `name(` with no `;` after it is no statement.
            rf"|^(?:[\w:]+::)?~?{n}{ws}*\([^;\n]*$"
        )
    else:
        head += ")"
    return re.compile(head, re.IGNORECASE if fold else 0)


def _definition_indent(
    pattern: re.Pattern[str], text: str, names: Sequence[str], fold: bool
) -> int | None:
    """Indentation of the first line of `text` that defines one of `names`, or None when no
    line does. The pattern runs only on the lines that contain a name at all, found by a
    substring search over the whole text, which keeps it cheap on big chunks."""
    needles = [n.lower() for n in names] if fold else list(names)
    hay = text.lower() if fold else text
    if len(hay) != len(text) or _RARE_LINE_BREAKS.search(text):
        # Lowering changed the length (offsets would not line up), or str.splitlines breaks
        # lines where "\n" does not: take the lines one by one.
        lines: Iterable[str] = (
            line
            for line in text.splitlines()
            if any(n in (line.lower() if fold else line) for n in needles)
        )
    else:
        lines = _lines_holding(text, hay, needles)
    for line in lines:
        match = pattern.match(line)
        if match is None:
            continue
        ctype = match.groupdict().get("ctype")
        if ctype is not None and ctype.split()[0].lower() in _NOT_A_TYPE:
            continue
        return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())
    return None


# Line breaks of str.splitlines other than "\n".
_RARE_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines_holding(text: str, hay: str, needles: Sequence[str]) -> list[str]:
    """The lines of `text` (split at "\n") on which `hay` (text, or its lower case of the
    same length) holds a needle, in order."""
    starts: set[int] = set()
    for needle in needles:
        at = hay.find(needle)
        while at >= 0:
            start = hay.rfind("\n", 0, at) + 1
            starts.add(start)
            end = hay.find("\n", at)
            at = hay.find(needle, at + 1) if end < 0 else hay.find(needle, end + 1)
    lines = []
    for start in sorted(starts):
        end = text.find("\n", start)
        lines.append(text[start:] if end < 0 else text[start:end])
    return lines


# Type or template arguments in a definition's name (`LruCache<K, V>.get`, `Map<K, V>::find`):
# a query names the type without them. Only after a word character, so `operator<=` stays.
_TYPE_ARGUMENTS = re.compile(r"(?<=\w)<[^<>]*>")
_SCOPE_SEPARATORS = re.compile(r"\.|::")


@functools.lru_cache(maxsize=4096)
def _segments(component: str) -> tuple[str, ...]:
    """The scope path of one definition name: `HttpClient.send` -> [HttpClient, send],
    `Table<K, Map<A, B>>::put` -> [Table, put]."""
    bare = component
    if "operator" not in bare:
        while (stripped := _TYPE_ARGUMENTS.sub("", bare)) != bare:
            bare = stripped
    return tuple(part for part in _SCOPE_SEPARATORS.split(bare) if part)


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
        self._parts_of: dict[str, list[str]] = {}  # component -> _parts (asked four times)

    def _key(self, name: str) -> str:
        return _loose(name) if self.fold else name

    def _parts(self, component: str) -> list[str]:
        parts = self._parts_of.get(component)
        if parts is None:
            parts = self._parts_of[component] = [self._key(s) for s in _segments(component)]
        return parts

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
        language = row.language or ""
        c_family = language in _C_FAMILY
        names: tuple[str, ...] = (self.last,)
        fold = False
        if self.fold:
            key = self.segments[-1]
            names = tuple(sorted({s for c in components for s in _segments(c) if _loose(s) == key}))
            if not names:
                names, fold = (self.last,), True
        pattern = _definition_pattern(names, fold, c_family, language in _DECLARING)
        return _definition_indent(pattern, row.text, names, fold)

    def relates(self, components: Sequence[str]) -> bool:
        """Whether a symbol names the identifier, is its outer scope, holds it as a path
        segment or encloses it."""
        return any(
            self._named(c) or self._outer(c) or self._segment(c) or self._enclosing(c)
            for c in components
        )

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
        if self.qualified and not self.relates(components):
            return None  # see could_define
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


def could_define(ident: str, symbols: Sequence[str]) -> bool:
    """False when a chunk with these symbols cannot define `ident`, whatever its text: a
    qualified name (`HttpClient.send`) is defined only in a chunk whose symbol names it, is
    its outer scope, holds it or encloses it (tiers 0, 1, 2 and 4). A caller can then leave
    such chunks unread. Names compared with case and underscores ignored, the looser of the
    two passes of ranked_definitions."""
    matcher = _DefinitionMatcher(ident, fold=True)
    return not matcher.qualified or matcher.relates(symbols)


def ranked_definitions(
    ident: str, rows: Sequence[ChunkRow], fused_order: Sequence[int]
) -> list[tuple[ChunkRow, tuple[int, int]]]:
    """The rows that define `ident` with their (tier, indent), best first: by (tier, indent),
    then rank in `fused_order`, then position. The pieces of one definition (same file,
    symbols and tier: a long body cut into chunks whose head was not recognised) share their
    best rank and come in order, so its first piece leads. Names compared as typed first;
    only when none matches, with case and underscores ignored."""
    fused_rank = {cid: rank for rank, cid in enumerate(fused_order)}
    unranked = len(fused_rank)
    for fold in (False, True):
        matcher = _DefinitionMatcher(ident, fold)
        found = [(row, tier) for row in rows if (tier := matcher.tier(row)) is not None]
        if found:
            best: dict[tuple[str, tuple[str, ...], tuple[int, int]], int] = {}
            for row, tier in found:
                key = (row.path, row.symbols, tier)
                best[key] = min(best.get(key, unranked), fused_rank.get(row.id, unranked))
            found.sort(
                key=lambda rt: (
                    rt[1],
                    best[(rt[0].path, rt[0].symbols, rt[1])],
                    rt[0].path,
                    rt[0].start_line,
                )
            )
            return found
    return []
