"""corpus.py: deterministic text corpora for the parity goldens and the embedding benchmark.

Both corpora are cut from the Python standard library's own source on this machine
(sysconfig.get_paths()["stdlib"]), so they are real code, need no download and come out the
same on every run with the same Python. Standard library only (no torch, no numpy): the module is
imported from both venvs.

- code_chunks(count): definition-sized windows (5..120 lines) of real source files, spread
  evenly over the whole library.
- golden_texts(): the parity set, >= 500 texts of every shape the embedder must get right: code
  and prose, short and past the 256-token window, non-ASCII (accents, CJK, emoji, RTL, combining
  marks), whitespace-only and empty strings, control characters.
- eval_sources(cache): the search evaluation's trees in several languages, each a pinned
  release of a package installable here: Python (this standard library), C (the lz4, Brotli
  and pycryptodome sdists on PyPI), JavaScript (lodash's per-method modules from npm) and Java (java.util.concurrent from Debian's openjdk-17-source). Fetched once into the
  cache folder with pip, npm or apt's files; a language whose source cannot be had is left out
  with its reason.

Run as a script to print a summary: `python scripts/corpus.py --help`.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_LINES = 5
MAX_LINES = 120

# A line that starts a definition (or its decorator) at module or class level: a chunk boundary.
_BOUNDARY = re.compile(r"^ {0,4}(?:async\s+def\s|def\s|class\s|@)")
_DEFINITION = re.compile(r"(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Chunk:
    """A window of one source file: lines start..end (1-based, inclusive)."""

    path: str  # relative to the stdlib root, '/'-separated
    start: int
    end: int
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path | None = None) -> list[Path]:
    """Every .py file of the standard library, sorted, without site-packages and caches."""
    root = root or stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if parts[0] == "site-packages" or "__pycache__" in parts or parts[0].startswith("config-"):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def split_chunks(rel: str, text: str) -> Iterator[Chunk]:
    """Cuts a file into windows that start at definitions: a window ends before the next
    definition once it has MIN_LINES lines, and at MAX_LINES lines whatever comes next.
    Blank-only windows are dropped; trailing blank lines are trimmed."""
    lines = text.splitlines()
    start = 0

    def emit(lo: int, hi: int) -> Chunk | None:
        while hi > lo and not lines[hi - 1].strip():
            hi -= 1
        if hi - lo < 1 or not any(line.strip() for line in lines[lo:hi]):
            return None
        return Chunk(rel, lo + 1, hi, "\n".join(lines[lo:hi]))

    for i, line in enumerate(lines):
        size = i - start
        at_boundary = bool(_BOUNDARY.match(line))
        # A decorator directly above a def stays with it: no cut between them.
        prev_decorator = i > 0 and lines[i - 1].lstrip().startswith("@")
        if (at_boundary and size >= MIN_LINES and not prev_decorator) or size >= MAX_LINES:
            chunk = emit(start, i)
            if chunk is not None:
                yield chunk
            start = i
    chunk = emit(start, len(lines))
    if chunk is not None:
        yield chunk


def iter_chunks(root: Path | None = None) -> Iterator[Chunk]:
    root = root or stdlib_root()
    for path in source_files(root):
        yield from split_chunks(path.relative_to(root).as_posix(), _read(path))


def code_chunks(count: int = 5000, root: Path | None = None) -> list[Chunk]:
    """`count` chunks of at least MIN_LINES lines, taken at an even stride over all chunks of the
    library so every package contributes. Raises ValueError when the library has fewer."""
    every = [c for c in iter_chunks(root) if c.end - c.start + 1 >= MIN_LINES]
    if count > len(every):
        raise ValueError(f"the standard library has only {len(every)} chunks, {count} asked")
    if count <= 0:
        return []
    step = len(every) / count
    return [every[int(i * step)] for i in range(count)]


# ---------------------------------------------------------------------------------------------
# The golden set.

# Hand-written texts for the tokenizer's edge cases. Each is (kind, text).
_EDGE_TEXTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("whitespace", " "),
    ("whitespace", "   "),
    ("whitespace", "\n"),
    ("whitespace", "\t\n\r "),
    ("whitespace", "\u00a0\u3000\u2003"),  # no-break, ideographic and em spaces
    ("control", "\x00"),
    ("control", "tab\tnul\x00bell\x07escape\x1bend"),
    ("control", "zero\u200bwidth\u200cjoin\u200dmarks\ufeffbom"),
    ("control", "replacement \ufffd character"),
    ("short", "a"),
    ("short", "."),
    ("short", "x = 1"),
    ("short", "def"),
    ("short", "[CLS] [SEP] [PAD] [UNK] [MASK]"),
    ("short", "self.assertEqual(a, b)"),
    ("short", "#include <stdio.h>"),
    ("short", "SELECT * FROM users WHERE id = ?;"),
    ("short", "https://docs.python.org/3/library/os.path.html#os.path.join"),
    ("short", "user@example.com"),
    ("short", "3.14159265358979 2.718281828 1e-10 0xDEADBEEF 0b1010 1_000_000"),
    ("short", "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case"),
    ("short", "a" * 99),
    ("short", "b" * 100),
    ("short", "c" * 101),  # words over 100 characters become [UNK]
    ("short", "antidisestablishmentarianism " * 3),
    ("short", "!!!???...,,,;;;:::"),
    ("short", "()[]{}<>"),
    ("short", "$%^&*~`|\\/"),
    ("accents", "café naïve résumé façade coöperate"),
    ("accents", "Ærøskøbing Ångström Øresund ß straße"),
    ("accents", "Crème brûlée à la française, s'il vous plaît."),
    ("accents", "Él está aquí; ¿qué pasó? ¡Olé!"),
    ("accents", "Zürich, München, Köln — Größe und Maße"),
    ("accents", "cafe\u0301 na\u0131\u0308ve"),  # combining acute and diaeresis (NFD forms)
    ("accents", "İstanbul ıi Iı"),  # Turkish dotted and dotless i
    ("accents", "Łódź Kraków Gdańsk Wrocław"),
    ("accents", "Tiếng Việt có dấu: người, được, những"),
    ("cjk", "你好，世界"),
    ("cjk", "这是一个用于测试的中文句子。"),
    ("cjk", "東京は日本の首都です。"),
    ("cjk", "ひらがな カタカナ 漢字"),
    ("cjk", "한국어 문장입니다"),
    ("cjk", "def 计算(数据): return sum(数据)  # 计算总和"),
    ("cjk", "全角文字：ＡＢＣ１２３"),
    ("cjk", "𠀀𠀁𠀂 extension-B ideographs"),
    ("emoji", "🐍"),
    ("emoji", "Python 🐍 is fun 🎉🎉🎉"),
    ("emoji", "👩‍💻 writes code, 👨‍👩‍👧 family, 🏳️‍🌈 flag"),
    ("emoji", "✅ done ❌ failed ⚠️ warning"),
    ("emoji", "😀😃😄😁😆😅😂🤣"),
    ("script", "Привет, мир! Это тест."),
    ("script", "Γειά σου Κόσμε"),
    ("script", "مرحبا بالعالم"),
    ("script", "שלום עולם"),
    ("script", "नमस्ते दुनिया"),
    ("script", "สวัสดีชาวโลก"),
    ("script", "ሰላም ልዑል"),
    ("script", "Ⅻ ½ ² ℃ ™ © ® ° ± × ÷ → ⇒ ∀ ∃ ∑ ∫ √ ∞ ≠ ≤ ≥"),
    ("script", "ﬁ ﬂ ﬀ ligatures and ｆｕｌｌｗｉｄｔｈ"),
    ("mixed", "print('héllo wörld 你好 🐍')"),
    ("mixed", "# -*- coding: utf-8 -*-\nname = 'Zoë'  # ünïcödé"),
    ("mixed", '<div class="greeting">Bonjour, ça va? 🙂</div>'),
    ("mixed", "SELECT nom FROM clients WHERE ville = 'Montréal'; -- 客户"),
]

# Natural-language queries of the kind users and agents type into `coarch search`.
_QUERIES: list[str] = [
    "parse a json file",
    "open a tcp socket and send bytes",
    "how do I read a file line by line",
    "retry an http request with exponential backoff",
    "compute the sha256 hash of a file",
    "where is the command line argument parser defined",
    "thread pool that runs tasks concurrently",
    "convert a datetime to a unix timestamp",
    "regular expression to match an email address",
    "walk a directory tree recursively",
    "serialize an object to bytes with pickle",
    "handle keyboard interrupt gracefully",
    "sort a list of dictionaries by a key",
    "create a temporary directory and clean it up",
    "decode base64 data",
    "compress data with zlib",
    "logging configuration with a file handler",
    "unit test that asserts an exception is raised",
    "async function that awaits a coroutine",
    "read environment variables with a default value",
    "lru cache decorator",
    "parse an url into its components",
    "spawn a subprocess and capture its output",
    "lock to protect shared state between threads",
    "format a number with thousands separators",
    "calculate the difference between two dates",
    "csv reader that yields dictionaries",
    "xml element tree parsing",
    "send an email over smtp",
    "generate a random password",
    "binary search in a sorted list",
    "heap priority queue push pop",
    "deep copy of a nested structure",
    "context manager that changes the working directory",
    "signal handler for SIGTERM",
    "memory mapped file access",
    "unicode normalization of a string",
    "tokenize python source code",
    "abstract syntax tree visitor",
    "dataclass with default factory",
]

# A single-token word repeated: "word " * k tokenizes to exactly k + 2 ids with [CLS] and [SEP],
# so these straddle the 256-id window (254 words fill it exactly).
_WINDOW_WORDS = (1, 2, 100, 253, 254, 255, 256, 300, 2000)


def _docstrings(root: Path, files: list[Path]) -> list[tuple[str, str]]:
    """(relative path, docstring) of modules, classes and functions, in file order."""
    found: list[tuple[str, str]] = []
    for path in files:
        try:
            tree = ast.parse(_read(path))
        except (SyntaxError, ValueError):
            continue
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= 20:
                    found.append((rel, doc))
    return found


def _is_test(rel: str) -> bool:
    """The library's own test suites (kept for the benchmark, left out of the golden set)."""
    return rel.startswith("test/") or "/idle_test/" in rel or "/tests/" in rel


def _spread(items: list, count: int) -> list:  # type: ignore[type-arg]
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def golden_texts(root: Path | None = None) -> list[dict[str, str]]:
    """The parity set: [{"kind": ..., "text": ...}], >= 500 entries, in a fixed order.

    Kinds: code (chunks under the 256-token window), code-long (chunks past it), prose
    (docstrings), prose-long, summary (docstring first lines), query, identifier, window
    (synthetic texts around 256 tokens), plus the hand-written edge kinds of _EDGE_TEXTS.
    The set is sized for a test that encodes it in seconds (about 30k tokens): most texts are
    short, and only ~45 go past the window (a longer text costs no more than 256 tokens, and
    those are capped at 4,000 characters to keep tests/data small)."""
    root = root or stdlib_root()
    files = [p for p in source_files(root) if not _is_test(p.relative_to(root).as_posix())]
    entries: list[dict[str, str]] = []

    chunks = [c for c in iter_chunks(root) if not _is_test(c.path)]
    short = [c for c in chunks if len(c.text) < 700]
    long = [c for c in chunks if 2500 <= len(c.text) <= 4000]
    for c in _spread(short, 170):
        entries.append({"kind": "code", "text": c.text})
    for c in _spread(long, 25):
        entries.append({"kind": "code-long", "text": c.text})

    docs = [d for _, d in _docstrings(root, _spread(files, 400))]
    for d in _spread([d for d in docs if len(d) < 600], 100):
        entries.append({"kind": "prose", "text": d})
    for d in _spread([d[:3000] for d in docs if len(d) >= 1600], 12):
        entries.append({"kind": "prose-long", "text": d})
    summaries = sorted({d.split("\n", 1)[0].strip() for d in docs})
    for line in _spread([s for s in summaries if len(s) >= 20], 60):
        entries.append({"kind": "summary", "text": line})

    for q in _QUERIES:
        entries.append({"kind": "query", "text": q})
    # Identifiers of the library, as code search sees them in a query.
    idents = sorted({m.group(1) for c in chunks if (m := _DEFINITION.match(c.text))})
    for name in _spread(idents, 50):
        entries.append({"kind": "identifier", "text": name})

    for k in _WINDOW_WORDS:
        entries.append({"kind": "window", "text": " ".join(["word"] * k)})
    # Non-ASCII past the window: accents, CJK and emoji repeated beyond 256 tokens.
    entries.append({"kind": "window", "text": "café naïve résumé " * 120})
    entries.append({"kind": "window", "text": "这是一个用于测试的中文句子。" * 40})
    entries.append({"kind": "window", "text": "🐍 python " * 200})

    for kind, text in _EDGE_TEXTS:
        entries.append({"kind": kind, "text": text})
    return entries


# ---------------------------------------------------------------------------------------------
# The search evaluation's trees.

# Python packages of the standard library the evaluation takes (tests left out).
EVAL_PYTHON_PACKAGES = (
    "email",
    "json",
    "http",
    "urllib",
    "logging",
    "concurrent",
    "html",
    "wsgiref",
)
# Pinned releases, so that every run (and every machine) measures the same code.
EVAL_C_SDISTS = ("lz4==4.4.5", "Brotli==1.1.0", "pycryptodome==3.21.0")
# Files of those sdists: the libraries' own C (lz4, lz4hc, lz4frame and xxhash; brotli's
# encoder, decoder and common code; pycryptodome's ciphers, hashes and bignum code), without the
# generated data tables, which hold no functions worth a query.
EVAL_C_GLOBS = (
    "lz4-*/lz4libs/*.c",
    "Brotli-*/c/common/*.c",
    "Brotli-*/c/enc/*.c",
    "Brotli-*/c/dec/*.c",
    "pycryptodome-*/src/*.c",
)
EVAL_C_EXCLUDE = re.compile(r"(?:_table|/dictionary|/make_\w+)\.c$")
EVAL_JS_PACKAGES = ("lodash@4.17.21",)
# lodash's per-method modules, one function (and its helpers) a file; the bundles (lodash.js,
# core.js, fp/) repeat the same functions and comments, which would give one query several
# right answers.
EVAL_JS_GLOBS = ("lodash/*.js",)
EVAL_JS_EXCLUDE = re.compile(r"^lodash/(?:lodash|core)(?:\.min)?\.js$")
EVAL_JAVA_ZIPS = ("/usr/lib/jvm/openjdk-17/lib/src.zip",)
EVAL_JAVA_PREFIX = "java.base/java/util/concurrent/"


@dataclass(frozen=True)
class EvalSource:
    """One language's tree for the search evaluation: files relative to `root`."""

    language: str
    root: Path
    files: tuple[str, ...]
    origin: str


def _matching(
    root: Path, globs: tuple[str, ...], exclude: re.Pattern[str] | None = None
) -> tuple[str, ...]:
    found = {p.relative_to(root).as_posix() for g in globs for p in root.glob(g) if p.is_file()}
    return tuple(sorted(f for f in found if exclude is None or not exclude.search(f)))


def python_eval_source(
    stdlib: Path | None = None, packages: tuple[str, ...] = EVAL_PYTHON_PACKAGES
) -> EvalSource:
    root = stdlib or stdlib_root()
    files: list[str] = []
    for package in packages:
        base = root / package
        paths = sorted(base.rglob("*.py")) if base.is_dir() else [root / f"{package}.py"]
        for path in paths:
            rel = path.relative_to(root)
            if "test" in rel.parts[:-1] or "__pycache__" in rel.parts or not path.is_file():
                continue
            files.append(rel.as_posix())
    return EvalSource(
        "python",
        root,
        tuple(files),
        f"Python {sys.version.split()[0]} stdlib: " + ",".join(packages),
    )


def _run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=600)


def c_eval_source(
    cache: Path,
    sdists: tuple[str, ...] = EVAL_C_SDISTS,
    globs: tuple[str, ...] = EVAL_C_GLOBS,
    exclude: re.Pattern[str] | None = EVAL_C_EXCLUDE,
    folder: str = "c",
) -> EvalSource:
    """The pinned C sdists from PyPI, downloaded and unpacked once."""
    root = cache / folder
    if not _matching(root, globs):
        download = cache / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(download),
                *sdists,
            ],
            cache,
        )
        root.mkdir(parents=True, exist_ok=True)
        for spec in sdists:
            name, version = spec.split("==")
            with tarfile.open(download / f"{name}-{version}.tar.gz") as archive:
                archive.extractall(root, filter="data")
    return EvalSource(
        "c", root, _matching(root, globs, exclude), "PyPI sdists " + ", ".join(sdists)
    )


def npm_eval_source(
    cache: Path,
    language: str,
    packages: tuple[str, ...],
    globs: tuple[str, ...],
    exclude: re.Pattern[str] | None,
    folder: str,
) -> EvalSource:
    """Pinned npm packages, fetched with `npm pack` and unpacked once (each in a folder of its
    name)."""
    root = cache / folder
    if not _matching(root, globs):
        download = cache / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        for spec in packages:
            name, version = spec.rsplit("@", 1)
            _run(["npm", "pack", "--silent", spec], download)
            target = root / name
            with tarfile.open(download / f"{name}-{version}.tgz") as archive:
                archive.extractall(root / ".unpack", filter="data")
            shutil.rmtree(target, ignore_errors=True)
            (root / ".unpack" / "package").rename(target)
            shutil.rmtree(root / ".unpack")
    return EvalSource(language, root, _matching(root, globs, exclude), "npm " + ", ".join(packages))


def javascript_eval_source(cache: Path) -> EvalSource:
    return npm_eval_source(
        cache, "javascript", EVAL_JS_PACKAGES, EVAL_JS_GLOBS, EVAL_JS_EXCLUDE, "javascript"
    )


def java_eval_source(
    cache: Path, prefixes: tuple[str, ...] = (EVAL_JAVA_PREFIX,), folder: str = "java"
) -> EvalSource:
    """Packages of the JDK's src.zip (by default java.util.concurrent with its atomic and
    locks packages), which Debian's openjdk-17-source installs."""
    root = cache / folder
    zips = [Path(z) for z in EVAL_JAVA_ZIPS if Path(z).is_file()]
    if not zips:
        raise FileNotFoundError("no JDK src.zip (apt-get install openjdk-17-source)")
    globs = tuple(f"{prefix}**/*.java" for prefix in prefixes)
    if not _matching(root, globs):
        with zipfile.ZipFile(zips[0]) as archive:
            for name in archive.namelist():
                if name.startswith(prefixes) and name.endswith(".java"):
                    archive.extract(name, root)
    return EvalSource("java", root, _matching(root, globs), f"{zips[0]} {' '.join(prefixes)}")


def go_eval_source(packages: tuple[str, ...]) -> EvalSource:
    """Packages of Go's standard library as Debian's golang-1.19-src installs it (each
    package's own files, tests left out)."""
    root = Path(HELDOUT_GO_ROOT)
    if not root.is_dir():
        raise FileNotFoundError(f"no {root} (apt-get install golang-1.19-src)")
    files = [
        path.relative_to(root).as_posix()
        for package in packages
        for path in sorted((root / package).glob("*.go"))
        if not path.name.endswith("_test.go")
    ]
    return EvalSource("go", root, tuple(files), f"Go {root}: " + ",".join(packages))


EVAL_LANGUAGES = ("python", "c", "javascript", "java")

# The held-out set (--set heldout): other code of the same four languages and two more, never
# looked at while tuning search, to check that a change generalises beyond the trees it was
# measured on.
HELDOUT_LANGUAGES = ("python", "c", "javascript", "java", "go", "typescript")
HELDOUT_PYTHON_PACKAGES = (
    "asyncio",
    "importlib",
    "xml",
    "multiprocessing",
    "sqlite3",
    "argparse",
    "tarfile",
    "configparser",
    "zipfile",
)
HELDOUT_C_SDISTS = ("zstandard==0.23.0", "psutil==6.1.0", "bitarray==3.0.0")
HELDOUT_C_GLOBS = (
    "zstandard-*/c-ext/*.c",
    "psutil-*/psutil/*.c",
    "psutil-*/psutil/arch/**/*.c",
    "bitarray-*/bitarray/*.c",
)
HELDOUT_JS_PACKAGES = (
    "underscore@1.13.7",
    "express@4.21.2",
    "axios@1.7.9",
    "commander@12.1.0",
    "ws@8.18.0",
)
HELDOUT_JS_GLOBS = (
    "underscore/modules/*.js",
    "express/lib/**/*.js",
    "axios/lib/**/*.js",
    "commander/lib/*.js",
    "ws/lib/*.js",
)
# underscore's index files only re-export its modules.
HELDOUT_JS_EXCLUDE = re.compile(r"^underscore/modules/index(?:-\w+)?\.js$")
HELDOUT_JAVA_PREFIXES = ("java.base/java/util/stream/", "java.base/java/time/")
HELDOUT_GO_ROOT = "/usr/share/go-1.19/src"
HELDOUT_GO_PACKAGES = (
    "bufio",
    "bytes",
    "strings",
    "strconv",
    "encoding/json",
    "net/url",
    "archive/tar",
    "compress/flate",
    "text/template",
)
HELDOUT_TS_PACKAGES = ("rxjs@7.8.1",)
HELDOUT_TS_GLOBS = ("rxjs/src/internal/**/*.ts",)
EVAL_SETS = ("main", "heldout")


def eval_sources(
    cache: Path,
    languages: tuple[str, ...] = EVAL_LANGUAGES,
    stdlib: Path | None = None,
    eval_set: str = "main",
) -> tuple[list[EvalSource], dict[str, str]]:
    """The trees of an evaluation set ("main" or "heldout"), and for each language that could
    not be had, why."""
    makers: dict[str, Callable[[], EvalSource]] = {
        "python": lambda: python_eval_source(stdlib),
        "c": lambda: c_eval_source(cache),
        "javascript": lambda: javascript_eval_source(cache),
        "java": lambda: java_eval_source(cache),
    }
    if eval_set == "heldout":
        makers = {
            "python": lambda: python_eval_source(stdlib, HELDOUT_PYTHON_PACKAGES),
            "c": lambda: c_eval_source(cache, HELDOUT_C_SDISTS, HELDOUT_C_GLOBS, None, "c-heldout"),
            "javascript": lambda: npm_eval_source(
                cache,
                "javascript",
                HELDOUT_JS_PACKAGES,
                HELDOUT_JS_GLOBS,
                HELDOUT_JS_EXCLUDE,
                "javascript-heldout",
            ),
            "java": lambda: java_eval_source(cache, HELDOUT_JAVA_PREFIXES, "java-heldout"),
            "go": lambda: go_eval_source(HELDOUT_GO_PACKAGES),
            "typescript": lambda: npm_eval_source(
                cache, "typescript", HELDOUT_TS_PACKAGES, HELDOUT_TS_GLOBS, None, "typescript"
            ),
        }
    sources: list[EvalSource] = []
    missing: dict[str, str] = {}
    for language in languages:
        try:
            source = makers[language]()
        except (OSError, subprocess.SubprocessError, tarfile.TarError, zipfile.BadZipFile) as exc:
            missing[language] = f"{type(exc).__name__}: {exc}"
            continue
        if source.files:
            sources.append(source)
        else:
            missing[language] = "no files matched"
    return sources, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print a summary of the deterministic corpora cut from the Python standard "
        "library (code chunks for the benchmark, the golden parity set), or dump one as JSON."
    )
    parser.add_argument("--chunks", type=int, default=5000, help="number of code chunks")
    parser.add_argument(
        "--dump", choices=["chunks", "golden"], help="write that corpus as JSON to stdout"
    )
    args = parser.parse_args(argv)
    if args.dump == "chunks":
        json.dump([c.text for c in code_chunks(args.chunks)], sys.stdout, ensure_ascii=False)
        return 0
    if args.dump == "golden":
        json.dump(golden_texts(), sys.stdout, ensure_ascii=False)
        return 0
    chunks = code_chunks(args.chunks)
    golden = golden_texts()
    kinds: dict[str, int] = {}
    for entry in golden:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    summary = {
        "stdlib": str(stdlib_root()),
        "python": sys.version.split()[0],
        "chunks": len(chunks),
        "chunk_chars_mean": sum(len(c.text) for c in chunks) / max(len(chunks), 1),
        "chunk_lines_max": max((c.end - c.start + 1 for c in chunks), default=0),
        "golden": len(golden),
        "golden_kinds": kinds,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
