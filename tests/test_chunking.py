"""Chunking: definition boundaries per language, the max_seq_length guarantee with the model's
own tokenizer, and the line fallback."""

from __future__ import annotations

import sysconfig
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coarch
from coarch.chunking import GRAMMAR_MAX_CHARS, Chunk, Chunker, chunk_header
from coarch.languages import language_for


@pytest.fixture(scope="module")
def chunker(embedder: coarch.Embedder) -> Chunker:
    return Chunker(embedder.count_tokens, embedder.max_seq_length)


def symbols(chunks: list[Chunk]) -> list[str | None]:
    return [c.symbol for c in chunks]


def assert_well_formed(chunks: list[Chunk], text: str, count: object, limit: int) -> None:
    """Every chunk fits, lines are in order and in range, every non-blank line is covered."""
    lines = text.split("\n")
    covered: set[int] = set()
    previous_end = 0
    for c in chunks:
        assert count(c.embed_text) == c.tokens <= limit, (c.start_line, c.end_line)  # type: ignore[operator]
        assert 1 <= c.start_line <= c.end_line <= len(lines)
        assert c.start_line >= previous_end  # in order; equal only for pieces of one line
        previous_end = c.end_line
        assert c.embed_text == chunk_header(c.path, c.symbol) + c.text
        assert c.text.strip()
        if c.start_line < c.end_line:
            assert c.text == "\n".join(lines[c.start_line - 1 : c.end_line])
        covered.update(range(c.start_line, c.end_line + 1))
    for i, line in enumerate(lines, 1):
        if line.strip():
            assert i in covered, f"line {i} not in any chunk: {line!r}"


PYTHON = '''\
"""Module docstring."""
import os


# A comment that belongs to the class below.
class HttpClient:
    """Talks HTTP."""

    timeout = 3

    def send(self, request):
        return request

    @staticmethod
    def parse(raw):
        return raw.split()


@decorator
def retry_upload(path):
    return os.path.exists(path)
'''


def test_python_definitions(chunker: Chunker) -> None:
    small = Chunker(chunker.count_tokens, chunker.max_tokens, target_tokens=24)
    chunks = small.chunk("pkg/client.py", PYTHON, "python")
    by_symbol = {c.symbol: c for c in chunks}
    assert "retry_upload" in by_symbol and by_symbol["retry_upload"].start_line == 19
    # Decorator and definition together, to the end of the function.
    assert by_symbol["retry_upload"].text.startswith("@decorator\ndef retry_upload")
    assert by_symbol["retry_upload"].end_line == 21
    # Methods are qualified by their class; the leading comment belongs to the class.
    assert any(s and s.startswith("HttpClient") for s in by_symbol)
    assert any(c.start_line == 5 and c.text.startswith("# A comment") for c in chunks)
    assert all(c.language == "python" and c.path == "pkg/client.py" for c in chunks)
    assert_well_formed(chunks, PYTHON, chunker.count_tokens, chunker.max_tokens)


def test_small_definitions_are_merged_up_to_the_target(chunker: Chunker) -> None:
    roomy = Chunker(chunker.count_tokens, chunker.max_tokens, target_tokens=192)
    chunks = roomy.chunk("pkg/client.py", PYTHON, "python")
    assert len(chunks) == 1  # the whole file fits in one chunk of 192 tokens
    assert chunks[0].start_line == 1 and chunks[0].end_line == 21
    assert chunks[0].symbol == "HttpClient, retry_upload"
    # The default target, 3/8 of the model's input (96 tokens), keeps the two apart.
    assert chunker.target_tokens == chunker.max_tokens * 3 // 8 == 96
    default = chunker.chunk("pkg/client.py", PYTHON, "python")
    assert [(c.start_line, c.end_line, c.symbol) for c in default] == [
        (1, 16, "HttpClient"),
        (19, 21, "retry_upload"),
    ]


def test_big_class_is_cut_along_its_methods(chunker: Chunker) -> None:
    body = "\n".join(
        f"        value_{i} = compute_something(value_{i - 1}, {i})" for i in range(1, 40)
    )
    methods = "\n\n".join(
        f"    def method_{m}(self):\n{body}\n        return value_39" for m in range(4)
    )
    text = f'class Engine:\n    """An engine."""\n\n{methods}\n'
    chunks = chunker.chunk("engine.py", text, "python")
    assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)
    syms = set(symbols(chunks))
    assert {f"Engine.method_{m}" for m in range(4)} <= syms
    # A method too big for one chunk is cut into pieces that all keep its name.
    assert symbols(chunks).count("Engine.method_0") >= 2


SAMPLES = {
    "javascript": (
        "app.js",
        """\
function fetchUser(id) {
  return db.get(id);
}

class Cart {
  addItem(item) {
    this.items.push(item);
  }
}

const total = (items) => items.reduce((a, b) => a + b, 0);
""",
        {"fetchUser", "Cart", "total"},
    ),
    "typescript": (
        "app.ts",
        """\
interface Shape {
  area(): number;
}

export class Circle implements Shape {
  constructor(private r: number) {}
  area(): number {
    return Math.PI * this.r * this.r;
  }
}

export function makeCircle(r: number): Circle {
  return new Circle(r);
}

type Id = string;
""",
        {"Shape", "Circle", "Circle.area", "makeCircle", "Id"},
    ),
    "java": (
        "Main.java",
        """\
package demo;

public class Main {
    private int count;

    public Main() {
        count = 0;
    }

    public int increment() {
        return ++count;
    }
}
""",
        {"Main", "Main.Main", "Main.increment"},
    ),
    "go": (
        "main.go",
        """\
package main

type Server struct {
	addr string
}

func (s *Server) Start() error {
	return nil
}

func main() {
	s := &Server{addr: ":8080"}
	s.Start()
}
""",
        {"Server", "Server.Start", "main"},
    ),
    "c": (
        "util.c",
        """\
#include <stdio.h>

struct point {
    int x, y;
};

static int *make_buffer(int n) {
    return calloc(n, sizeof(int));
}

int main(void) {
    printf("hi\\n");
    return 0;
}
""",
        {"point", "make_buffer", "main"},
    ),
    "cpp": (
        "shape.cpp",
        """\
namespace geo {

class Square {
 public:
  double area() const { return side * side; }
  double side;
};

double Square::perimeter() const {
  return 4 * side;
}

}  // namespace geo
""",
        {"geo", "geo.Square", "geo.Square::perimeter"},
    ),
    "rust": (
        "lib.rs",
        """\
/// A stack.
#[derive(Debug)]
pub struct Stack {
    items: Vec<i32>,
}

impl Stack {
    pub fn push(&mut self, x: i32) {
        self.items.push(x);
    }
}

fn helper() -> i32 {
    42
}
""",
        {"Stack", "Stack.push", "helper"},
    ),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_definitions_per_language(chunker: Chunker, language: str) -> None:
    path, text, expected = SAMPLES[language]
    assert language_for(path) == language
    # A small limit: outer definitions do not fit, so nested ones become chunks of their own.
    tiny = Chunker(chunker.count_tokens, 40, target_tokens=20)
    chunks = tiny.chunk(path, text, language)
    assert_well_formed(chunks, text, chunker.count_tokens, 40)
    found: set[str] = set()
    for c in chunks:
        found.update(s.strip() for s in (c.symbol or "").split(","))
    assert expected <= found, (expected - found, [(c.start_line, c.symbol) for c in chunks])


def test_rust_attributes_and_doc_comments_belong_to_the_item(chunker: Chunker) -> None:
    path, text, _ = SAMPLES["rust"]
    tiny = Chunker(chunker.count_tokens, 40, target_tokens=20)
    stack = next(c for c in tiny.chunk(path, text, "rust") if c.symbol == "Stack")
    assert stack.start_line == 1 and stack.text.startswith("/// A stack.\n#[derive(Debug)]")


JS_ASSIGNED = """\
Cart.prototype.total = function () {
  return this.items.length;
};
exports.parse = (text) => JSON.parse(text);
module.exports = function createStore() {};
const handlers = {
  onOpen: function () {},
  'on-close': () => null,
};
class View {
  handleClick = () => { this.render(); };
  #hidden = () => 2;
}
"""


@pytest.mark.parametrize("language", ["javascript", "typescript"])
def test_functions_assigned_in_javascript_are_definitions(chunker: Chunker, language: str) -> None:
    # Functions given a name by assignment, as a property or as a class field: what
    # CommonJS modules, prototypes, object literals and React components are made of.
    tiny = Chunker(chunker.count_tokens, 40, target_tokens=10)
    chunks = tiny.chunk("app.js", JS_ASSIGNED, language)
    assert_well_formed(chunks, JS_ASSIGNED, chunker.count_tokens, 40)
    starts = {c.symbol: c.start_line for c in chunks}
    assert starts["Cart.total"] == 1  # a prototype method is named by its constructor
    assert starts["parse"] == 4
    assert starts["createStore"] == 5  # the function's own name, not `exports`
    # Properties of a module-level object are named by it.
    assert starts["handlers.onOpen"] == 7 and starts["handlers.on-close"] == 8
    assert starts["View.handleClick"] == 11 and starts["View.#hidden"] == 12


JS_MODULE = """\
var createBaseEach = require('./_createBaseEach'),
    baseForOwn = require('./_baseForOwn');

var baseEach = createBaseEach(baseForOwn);

export const routes = ['/', '/about'];

function render() {
  const local = routes.length;
  return local;
}

module.exports = baseEach;
"""


@pytest.mark.parametrize("language", ["javascript", "typescript"])
def test_a_javascript_modules_own_values_are_definitions(chunker: Chunker, language: str) -> None:
    tiny = Chunker(chunker.count_tokens, 30, target_tokens=5)
    chunks = tiny.chunk("baseEach.js", JS_MODULE, language)
    assert_well_formed(chunks, JS_MODULE, chunker.count_tokens, 30)
    by_start = {c.start_line: c.symbol for c in chunks}
    assert by_start[4] == "baseEach" and by_start[6] == "routes" and by_start[8] == "render"
    # Imports, locals and the export line define nothing.
    assert by_start[1] is None and by_start[13] is None
    assert not any("local" in (c.symbol or "") for c in chunks)


C_MACROS = """\
#include <string.h>

#define HASH_LOG 12

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static int clamp(int v) {
    return MIN(v, 1 << HASH_LOG);
}
"""


def test_c_macros_are_definitions(chunker: Chunker) -> None:
    tiny = Chunker(chunker.count_tokens, 30, target_tokens=5)
    chunks = tiny.chunk("hash.c", C_MACROS, "c")
    assert_well_formed(chunks, C_MACROS, chunker.count_tokens, 30)
    by_start = {c.start_line: c.symbol for c in chunks}
    assert by_start[3] == "HASH_LOG" and by_start[5] == "MIN" and by_start[7] == "clamp"
    assert by_start[1] is None  # an include defines nothing


def test_fallback_cuts_at_blank_lines(chunker: Chunker) -> None:
    paragraphs = [" ".join(f"word{p}_{w}" for w in range(60)) for p in range(12)]
    text = "\n\n".join(paragraphs) + "\n"
    chunks = chunker.chunk("notes.md", text, "markdown")
    assert len(chunks) > 1
    assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)
    for c in chunks:  # cuts fall between paragraphs, never inside one
        assert c.text.split("\n")[0].startswith("word") and c.text.split("\n")[-1]
        assert all(len(line.split()) in (0, 60) for line in c.text.split("\n"))
    assert all(c.symbol is None for c in chunks)


def test_unknown_language_and_parse_failure_fall_back(chunker: Chunker) -> None:
    text = "x = = = (\n" * 50
    for language in (None, "python"):
        chunks = chunker.chunk("broken.py", text, language)
        assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)


def test_long_lines_are_cut_inside_the_line(chunker: Chunker) -> None:
    line = "data = [" + ", ".join(f"'item{i}'" for i in range(600)) + "]"
    symbols_line = "x" + "+-*/" * 700  # one "word" of ~2,800 punctuation tokens
    text = f"def f():\n    {line}\n    return data\n{symbols_line}\n"
    chunks = chunker.chunk("long.py", text, "python")
    assert len(chunks) > 4
    assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)
    pieces = [c.text for c in chunks if c.start_line == c.end_line == 4]
    assert "".join(pieces) == symbols_line


def test_blank_files_and_blank_edges(chunker: Chunker) -> None:
    assert chunker.chunk("empty.py", "", "python") == []
    assert chunker.chunk("blank.py", "\n\n   \n\t\n", "python") == []
    (c,) = chunker.chunk("x.py", "\n\n\nx = 1\n\n\n", "python")
    assert (c.start_line, c.end_line, c.text) == (4, 4, "x = 1")


def test_stdlib_files_fit_the_model(chunker: Chunker) -> None:
    lib = Path(sysconfig.get_paths()["stdlib"])
    for rel in ("json/decoder.py", "textwrap.py", "shlex.py", "heapq.py"):
        text = (lib / rel).read_text()
        chunks = chunker.chunk(rel, text, "python")
        assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)
        assert sum(1 for c in chunks if c.symbol) >= len(chunks) // 2


def test_a_huge_file_is_cut_by_lines_in_bounded_memory(chunker: Chunker) -> None:
    lib = Path(sysconfig.get_paths()["stdlib"])
    unit = "".join((lib / rel).read_text() for rel in ("textwrap.py", "shlex.py", "heapq.py"))
    text = unit * (GRAMMAR_MAX_CHARS * 3 // 2 // len(unit) + 1)  # about 3 MB
    tracemalloc.start()
    try:
        chunks = chunker.chunk("huge.py", text, "python")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # With the grammar the syntax tree and its matches alone took about 22 bytes per byte.
    assert peak < 12 * len(text), peak / len(text)
    assert all(c.symbol is None for c in chunks)
    assert_well_formed(chunks, text, chunker.count_tokens, chunker.max_tokens)


def test_chunks_are_frozen(chunker: Chunker) -> None:
    (c,) = chunker.chunk("x.py", "x = 1\n", "python")
    with pytest.raises(AttributeError):
        c.text = "y"  # type: ignore[misc]


_LINE = st.one_of(
    st.just(""),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=300),
    st.builds(
        lambda n, w: "    " * n + " ".join(w),
        st.integers(0, 3),
        st.lists(
            st.sampled_from(
                [
                    "def",
                    "f(x):",
                    "return",
                    "x",
                    "{",
                    "}",
                    "é",
                    "数据",
                    "__init__",
                    "+-*/",
                    "HTTPServer",
                    "#",
                    "'''",
                ]
            ),
            max_size=40,
        ),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_LINE, max_size=60),
    language=st.sampled_from([None, "python", "javascript", "c", "rust", "go"]),
    limit=st.sampled_from([32, 64, 256]),
)
def test_property_every_chunk_fits_and_lines_are_covered(
    embedder: coarch.Embedder, lines: list[str], language: str | None, limit: int
) -> None:
    chunker = Chunker(embedder.count_tokens, limit)
    text = "\n".join(lines)
    chunks = chunker.chunk("some/dir/file.txt", text, language)
    assert_well_formed(chunks, text, embedder.count_tokens, limit)


def test_chunks_do_not_depend_on_what_was_chunked_before(embedder: coarch.Embedder) -> None:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "keyword.py").read_text()
    used = Chunker(embedder.count_tokens, 64)
    used.chunk("a/long/folder/name/that/makes/a/long/header/for/this/file.py", text, "python")
    assert used.chunk("keyword.py", text, "python") == Chunker(embedder.count_tokens, 64).chunk(
        "keyword.py", text, "python"
    )


@pytest.mark.parametrize("limit", [256, 40])
def test_a_path_longer_than_the_model_input_keeps_its_file_name(
    embedder: coarch.Embedder, limit: int
) -> None:
    # A header alone over the limit once sent the fitting into endless recursion.
    text = "".join(f"def handler_{i}(x):\n    return x + {i}\n\n" for i in range(20))
    path = "deeply/nested/" * 60 + "handlers.py"
    chunks = Chunker(embedder.count_tokens, limit).chunk(path, text, "python")
    assert "\n".join(c.text for c in chunks).split() == text.split()  # nothing lost
    for c in chunks:
        assert embedder.count_tokens(c.embed_text) == c.tokens <= limit
        header = c.embed_text[: len(c.embed_text) - len(c.text)]
        assert header.startswith("path: ") and "handlers.py" in header
        assert embedder.count_tokens(header) - 2 <= (limit - 2) // 2


def test_counting_a_files_lines_in_one_call_changes_no_chunk(embedder: coarch.Embedder) -> None:
    from coarch.identifiers import model_text
    from coarch.pipeline import new_chunker

    def count_model_tokens(text: str) -> int:
        return embedder.count_tokens(model_text(text))

    lib = Path(sysconfig.get_paths()["stdlib"])
    files = [
        (rel, (lib / rel).read_text(), "python")
        for rel in ("json/decoder.py", "textwrap.py", "shlex.py")
    ]
    files += [(path, text, language) for language, (path, text, _) in SAMPLES.items()]
    files.append(("odd.txt", "a\u2028\n\u3000\n\x1c\n  \n[CLS] x\n\ud800y\n", None))
    for limit in (embedder.max_seq_length, 40):
        per_line = Chunker(embedder.count_tokens, limit, target_tokens=limit // 2)
        batched = Chunker(
            embedder.count_tokens,
            limit,
            target_tokens=limit // 2,
            count_lines=embedder.count_line_tokens,
        )
        for path, text, language in files:
            assert batched.chunk(path, text, language) == per_line.chunk(path, text, language)
    # The indexer's chunker counts the model's form of the text (identifiers split) per file.
    indexing = new_chunker(embedder)
    assert indexing.count_lines is not None
    reference = Chunker(count_model_tokens, embedder.max_seq_length)
    for path, text, language in files:
        assert indexing.chunk(path, text, language) == reference.chunk(path, text, language)
