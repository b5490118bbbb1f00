"""coarch.definitions: which chunks define a queried identifier, in which order.

Cases found by the held-out evaluation (scripts/eval_search.py --set heldout): C written in the
GNU/BSD style, prose in a C comment that reads like a function head, and long definitions cut
into pieces whose head the patterns do not recognise.
"""

from __future__ import annotations

from coarch.definitions import ranked_definitions
from coarch.store.rows import ChunkRow

GNU_STYLE = """static int
resize(bitarrayobject *self, Py_ssize_t nbits)
{
    return 0;
}
"""

PROSE = """/*
   The situation is different from how resize() raises an exception when
   in resize() itself, as there only one function which resizes the buffer,
   and this function (resize()) needs to report failures anyway.
*/
"""


def row(cid: int, start: int, text: str, symbols: tuple[str, ...], language: str = "c") -> ChunkRow:
    return ChunkRow(cid, "src/a.c", start, start + text.count("\n"), language, symbols, text)


def ranked(ident: str, rows: list[ChunkRow], fused: list[int]) -> list[tuple[int, int]]:
    return [(r.id, tier[0]) for r, tier in ranked_definitions(ident, rows, fused)]


def test_gnu_style_c_function_is_defined_on_the_line_of_its_name() -> None:
    """The return type on its own line: the name at the start of the next line defines it,
    surely (tier 0), even where the fused ranking put another chunk first."""
    definition = row(1, 30, GNU_STYLE, ("resize",))
    assert ranked("resize", [definition], [1]) == [(1, 0)]
    call = row(2, 80, "static void\ngrow(void)\n{\n    resize(self, 8);\n}\n", ("grow",))
    assert ranked("resize", [call, definition], [2, 1]) == [(1, 0)]


def test_prose_in_a_c_comment_defines_nothing() -> None:
    """ "in resize() itself, as ..." has the shape `type name(` but starts with an English
    word: no definition, so the real one comes first."""
    assert ranked("resize", [row(2, 899, PROSE, ())], [2]) == []
    assert ranked(
        "resize", [row(2, 899, PROSE, ()), row(1, 30, GNU_STYLE, ("resize",))], [2, 1]
    ) == [(1, 0)]


def test_a_c_statement_at_the_start_of_a_line_is_no_definition() -> None:
    assert ranked("resize", [row(3, 5, "resize(self, 8);\n", ())], [3]) == []


def test_pieces_of_one_long_definition_lead_with_its_first() -> None:
    """A method whose parameters span lines is cut into pieces that all carry its symbol; the
    fused ranking liked the second piece better, but the first, where the definition starts,
    leads."""
    head = row(
        3,
        213,
        "  subscribe(\n    observer?: Partial<Observer<T>>,\n  ): Subscription {\n    const s = 1;\n",
        ("Observable.subscribe",),
        "typescript",
    )
    tail = row(
        4,
        220,
        "    errorContext(() => {\n      s.add(1);\n    });\n  }\n",
        head.symbols,
        "typescript",
    )
    other = row(5, 300, "  pipe(): Observable<T> {\n    return this;\n  }\n", ("Observable.pipe",))
    assert [cid for cid, _ in ranked("Observable.subscribe", [tail, other, head], [4, 5, 3])] == [
        3,
        4,
    ]


def test_java_interface_method_is_defined_by_its_declaration() -> None:
    """In Java a head ending in `;` is an interface's or abstract method, the definition
    itself; it leads over the piece of its Javadoc cut off above it. In C the same line is a
    prototype, no definition."""
    doc = row(
        6,
        90,
        "    /**\n     * Attempts to cancel execution of this task.\n     */\n",
        ("Future.cancel",),
        "java",
    )
    head = row(
        7, 111, "    boolean cancel(boolean mayInterruptIfRunning);\n", ("Future.cancel",), "java"
    )
    assert [cid for cid, _ in ranked("Future.cancel", [doc, head], [6, 7])] == [7, 6]
    prototype = row(8, 3, "int resize(int size);\n", ())
    assert ranked("resize", [prototype], [8]) == []
