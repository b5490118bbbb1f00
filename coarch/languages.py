"""Language of a file from its name, and the tree-sitter grammar of the languages that have one."""

from __future__ import annotations

import functools
import importlib
import logging
import re
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

# Extension (lowercase, with the dot) -> language name.
EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".pyx": "cython",
    ".pxd": "cython",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".sc": "scala",
    ".groovy": "groovy",
    ".gradle": "groovy",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
    ".h++": "cpp",
    ".ipp": "cpp",
    ".inl": "cpp",
    ".tpp": "cpp",
    ".m": "objective-c",
    ".mm": "objective-cpp",
    ".cs": "csharp",
    ".fs": "fsharp",
    ".fsx": "fsharp",
    ".vb": "vbnet",
    ".swift": "swift",
    ".dart": "dart",
    ".rb": "ruby",
    ".rake": "ruby",
    ".gemspec": "ruby",
    ".php": "php",
    ".pl": "perl",
    ".pm": "perl",
    ".t": "perl",
    ".lua": "lua",
    ".r": "r",
    ".jl": "julia",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".hrl": "erlang",
    ".hs": "haskell",
    ".lhs": "haskell",
    ".ml": "ocaml",
    ".mli": "ocaml",
    ".clj": "clojure",
    ".cljs": "clojure",
    ".cljc": "clojure",
    ".edn": "clojure",
    ".el": "elisp",
    ".lisp": "lisp",
    ".scm": "scheme",
    ".rkt": "racket",
    ".zig": "zig",
    ".nim": "nim",
    ".v": "verilog",
    ".sv": "systemverilog",
    ".vhd": "vhdl",
    ".vhdl": "vhdl",
    ".f": "fortran",
    ".f90": "fortran",
    ".f95": "fortran",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".ksh": "shell",
    ".fish": "fish",
    ".ps1": "powershell",
    ".psm1": "powershell",
    ".bat": "batch",
    ".cmd": "batch",
    ".sql": "sql",
    ".graphql": "graphql",
    ".gql": "graphql",
    ".proto": "protobuf",
    ".thrift": "thrift",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".vue": "vue",
    ".svelte": "svelte",
    ".css": "css",
    ".scss": "scss",
    ".sass": "sass",
    ".less": "less",
    ".json": "json",
    ".jsonc": "json",
    ".json5": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".conf": "ini",
    ".xml": "xml",
    ".xsd": "xml",
    ".xsl": "xml",
    ".plist": "xml",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "restructuredtext",
    ".txt": "text",
    ".adoc": "asciidoc",
    ".tex": "latex",
    ".org": "org",
    ".cmake": "cmake",
    ".mk": "make",
    ".mak": "make",
    ".nix": "nix",
    ".tf": "terraform",
    ".hcl": "hcl",
    ".dockerfile": "dockerfile",
    ".bzl": "starlark",
    ".star": "starlark",
    ".s": "assembly",
    ".asm": "assembly",
    ".cu": "cuda",
    ".cuh": "cuda",
    ".glsl": "glsl",
    ".sol": "solidity",
    ".ipynb": "json",
    ".awk": "awk",
    ".sed": "sed",
    ".vim": "vim",
    ".tcl": "tcl",
    ".d": "d",
    ".pas": "pascal",
    ".ada": "ada",
    ".adb": "ada",
    ".ads": "ada",
    ".cob": "cobol",
    ".elm": "elm",
    ".purs": "purescript",
    ".gleam": "gleam",
    ".cabal": "cabal",
    ".in": "text",
    ".am": "make",
    ".ac": "m4",
    ".m4": "m4",
}

# Whole file names (exact, case-sensitive) -> language name.
FILENAMES: dict[str, str] = {
    "Makefile": "make",
    "makefile": "make",
    "GNUmakefile": "make",
    "Kbuild": "make",
    "Dockerfile": "dockerfile",
    "Containerfile": "dockerfile",
    "CMakeLists.txt": "cmake",
    "Rakefile": "ruby",
    "Gemfile": "ruby",
    "Podfile": "ruby",
    "Vagrantfile": "ruby",
    "Brewfile": "ruby",
    "Jenkinsfile": "groovy",
    "BUILD": "starlark",
    "BUILD.bazel": "starlark",
    "WORKSPACE": "starlark",
    "Pipfile": "toml",
    "Cargo.lock": "toml",
    "go.mod": "go-mod",
    "go.sum": "text",
    "meson.build": "meson",
    "SConstruct": "python",
    "SConscript": "python",
    "Justfile": "just",
    "justfile": "just",
    "Procfile": "text",
    "Snakefile": "python",
    ".bashrc": "shell",
    ".bash_profile": "shell",
    ".zshrc": "shell",
    ".profile": "shell",
    ".gitignore": "gitignore",
    ".gitattributes": "text",
    ".editorconfig": "ini",
    "Guardfile": "ruby",
    "Fastfile": "ruby",
    "Berksfile": "ruby",
    "Thorfile": "ruby",
    "Appfile": "ruby",
    "PKGBUILD": "shell",
    "APKBUILD": "shell",
    ".envrc": "shell",
    ".zprofile": "shell",
    ".bash_aliases": "shell",
    ".bash_logout": "shell",
    "Tiltfile": "starlark",
    "composer.lock": "json",
    ".babelrc": "json",
    ".eslintrc": "json",
    "README": "text",
    "LICENSE": "text",
    "COPYING": "text",
    "NEWS": "text",
    "CHANGES": "text",
}

# Interpreter named on a "#!" line -> language name, for extensionless scripts.
SHEBANGS: dict[str, str] = {
    "python": "python",
    "python3": "python",
    "python2": "python",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "ksh": "shell",
    "dash": "shell",
    "node": "javascript",
    "perl": "perl",
    "ruby": "ruby",
    "php": "php",
    "lua": "lua",
    "tclsh": "tcl",
    "awk": "awk",
    "deno": "typescript",
    "bun": "typescript",
    "ts-node": "typescript",
    "tsx": "typescript",
    "pwsh": "powershell",
    "elixir": "elixir",
    "julia": "julia",
    "Rscript": "r",
    "scala": "scala",
    "kotlin": "kotlin",
    "swift": "swift",
    "groovy": "groovy",
    "runghc": "haskell",
    "runhaskell": "haskell",
    "ocaml": "ocaml",
    "make": "make",
    "fish": "fish",
    "luajit": "lua",
}


def language_for(path: str, first_line: str | None = None) -> str | None:
    """Language name for a POSIX relative path, or None when the name says nothing and the
    first line (if given) has no known "#!" interpreter. None means "not code we know": such
    files are still indexed, as plain text, when they pass discovery's checks."""
    name = PurePosixPath(path).name
    if name in FILENAMES:
        return FILENAMES[name]
    if name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
        return "dockerfile"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if first_line is not None and first_line.startswith("#!"):
        words = first_line[2:].strip().split()
        if words:
            program = words[0].rsplit("/", 1)[-1]
            if program == "env":  # `env python3`, `env -S deno run`
                rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
                program = rest[0] if rest else program
            program = program.rstrip("0123456789.") or program
            return SHEBANGS.get(program) or SHEBANGS.get(program + "3")
    return None


# Language -> (module of its PyPI grammar wheel, function returning the language pointer). Each
# language here has its definition query in coarch/queries/<language>.scm.
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "go": ("tree_sitter_go", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "cuda": ("tree_sitter_cpp", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "kotlin": ("tree_sitter_kotlin", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "swift": ("tree_sitter_swift", "language"),
    "scala": ("tree_sitter_scala", "language"),
    "lua": ("tree_sitter_lua", "language"),
    "shell": ("tree_sitter_bash", "language"),
    "sql": ("tree_sitter_sql", "language"),
    "markdown": ("tree_sitter_markdown", "language"),
    "yaml": ("tree_sitter_yaml", "language"),
    "toml": ("tree_sitter_toml", "language"),
    "json": ("tree_sitter_json", "language"),
    "vue": ("tree_sitter_html", "language"),
    "svelte": ("tree_sitter_html", "language"),
    "css": ("tree_sitter_css", "language"),
    "haskell": ("tree_sitter_haskell", "language"),
    "elixir": ("tree_sitter_elixir", "language"),
    "julia": ("tree_sitter_julia", "language"),
    "zig": ("tree_sitter_zig", "language"),
    "ocaml": ("tree_sitter_ocaml", "language_ocaml"),
    "hcl": ("tree_sitter_hcl", "language"),
    "terraform": ("tree_sitter_hcl", "language"),
    "make": ("tree_sitter_make", "language"),
    "powershell": ("tree_sitter_powershell", "language"),
    "groovy": ("tree_sitter_groovy", "language"),
}

# Names people type for a language (`--lang`), besides its own name and its extensions.
ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "jsx": "javascript",
    "ts": "typescript",
    "golang": "go",
    "c++": "cpp",
    "cxx": "cpp",
    "rs": "rust",
    "kt": "kotlin",
    "kts": "kotlin",
    "cs": "csharp",
    "c#": "csharp",
    "c-sharp": "csharp",
    "dotnet": "csharp",
    "rb": "ruby",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "ksh": "shell",
    "yml": "yaml",
    "md": "markdown",
    "tf": "terraform",
    "ps1": "powershell",
    "pwsh": "powershell",
    "makefile": "make",
    "docker": "dockerfile",
    "objc": "objective-c",
    "ex": "elixir",
    "exs": "elixir",
    "hs": "haskell",
    "jl": "julia",
    "ml": "ocaml",
    "pl": "perl",
    "gradle": "groovy",
    "postgres": "sql",
    "mysql": "sql",
}


def canonical_language(name: str) -> str:
    """A language as the index names it: `python` stays, an alias (`kt`, `c#`, `sh`), an
    extension (`py`, `.ts`) or a well-known file name (`Makefile`) maps to its language,
    anything else is lowercased."""
    text = name.strip()
    lowered = text.lower()
    if lowered in _KNOWN:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    extension = lowered if lowered.startswith(".") else "." + lowered
    return EXTENSIONS.get(extension) or FILENAMES.get(text) or lowered


_KNOWN = (
    frozenset(EXTENSIONS.values())
    | frozenset(FILENAMES.values())
    | frozenset(_GRAMMARS)
    | frozenset(SHEBANGS.values())
)


def known_languages() -> list[str]:
    """Every language name the index can hold (what language_for assigns), sorted."""
    return sorted(_KNOWN)


# `<script lang="ts">`, `<script type="text/typescript">`: the language of an embedded block.
_SCRIPT_LANG = re.compile(r"""\b(?:lang|type)\s*=\s*["']?(?:text/|application/)?([\w+#-]+)""")


def script_language(start_tag: str) -> str:
    """Language of a <script> block (Vue, Svelte) from its start tag: JavaScript by default."""
    match = _SCRIPT_LANG.search(start_tag)
    if match is None:
        return "javascript"
    language = canonical_language(match.group(1))
    return language if language in ("typescript", "tsx") else "javascript"


def grammar_languages() -> frozenset[str]:
    """Languages that have a definition-aware chunker when their grammar wheel is installed."""
    return frozenset(_GRAMMARS)


def definition_patterns(language: str) -> list[str]:
    """The tree-sitter patterns of coarch/queries/<language>.scm, one string per pattern, those
    of the files named on its `; inherits: a, b` first line first. Empty for no file."""
    try:
        text = resources.files("coarch").joinpath("queries").joinpath(f"{language}.scm").read_text()
    except FileNotFoundError:
        return []
    patterns: list[str] = []
    first = text.split("\n", 1)[0]
    if first.startswith("; inherits:"):
        for parent in first.split(":", 1)[1].split(","):
            patterns.extend(definition_patterns(parent.strip()))
    patterns.extend(split_patterns(text))
    return patterns


_CAPTURE_TAIL = re.compile(r"[ \t]*(?:@[\w.]+|[?*+])")


def split_patterns(text: str) -> list[str]:
    """The top-level patterns of a query file: each balanced (...) or [...] form with the
    captures and quantifiers that follow it; `;` comments and strings are respected."""
    patterns: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == ";":
            i = _line_end(text, i)
        elif ch in "([":
            end = _form_end(text, i)
            while (tail := _CAPTURE_TAIL.match(text, end)) is not None:
                end = tail.end()
            patterns.append(text[i:end])
            i = end
        else:
            raise ValueError(f"query: unexpected {ch!r} at offset {i}")
    return patterns


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _form_end(text: str, i: int) -> int:
    """Offset just past the balanced form opening at text[i]."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == ";":
            i = _line_end(text, i)
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("query: unbalanced parentheses")


@functools.cache
def ts_language(language: str) -> Any | None:
    """The tree_sitter.Language of `language`, or None when it has no grammar here (not in the
    table, or the wheel or tree_sitter itself missing: then the line-based chunker is used)."""
    entry = _GRAMMARS.get(language)
    if entry is None:
        return None
    try:
        import tree_sitter

        module = importlib.import_module(entry[0])
        return tree_sitter.Language(getattr(module, entry[1])())
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.warning(
            "no tree-sitter grammar for %s (%s); using the line-based chunker", language, exc
        )
        return None
