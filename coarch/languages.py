"""Language of a file from its name, and the tree-sitter grammar of the languages that have one."""

from __future__ import annotations

import functools
import importlib
import logging
from pathlib import PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

# Extension (lowercase, with the dot) -> language name.
EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python", ".pyx": "cython", ".pxd": "cython",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".sc": "scala",
    ".groovy": "groovy", ".gradle": "groovy",
    ".go": "go", ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp",
    ".hxx": "cpp", ".h++": "cpp", ".ipp": "cpp", ".inl": "cpp", ".tpp": "cpp",
    ".m": "objective-c", ".mm": "objective-cpp",
    ".cs": "csharp", ".fs": "fsharp", ".fsx": "fsharp", ".vb": "vbnet",
    ".swift": "swift", ".dart": "dart",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby",
    ".php": "php", ".pl": "perl", ".pm": "perl", ".t": "perl", ".lua": "lua", ".r": "r",
    ".jl": "julia", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hrl": "erlang",
    ".hs": "haskell", ".lhs": "haskell", ".ml": "ocaml", ".mli": "ocaml",
    ".clj": "clojure", ".cljs": "clojure", ".cljc": "clojure", ".edn": "clojure",
    ".el": "elisp", ".lisp": "lisp", ".scm": "scheme", ".rkt": "racket",
    ".zig": "zig", ".nim": "nim", ".v": "verilog", ".sv": "systemverilog", ".vhd": "vhdl",
    ".vhdl": "vhdl", ".f": "fortran", ".f90": "fortran", ".f95": "fortran",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell", ".fish": "fish",
    ".ps1": "powershell", ".psm1": "powershell", ".bat": "batch", ".cmd": "batch",
    ".sql": "sql", ".graphql": "graphql", ".gql": "graphql", ".proto": "protobuf",
    ".thrift": "thrift",
    ".html": "html", ".htm": "html", ".xhtml": "html", ".vue": "vue", ".svelte": "svelte",
    ".css": "css", ".scss": "scss", ".sass": "sass", ".less": "less",
    ".json": "json", ".jsonc": "json", ".json5": "json", ".yaml": "yaml", ".yml": "yaml",
    ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".xml": "xml",
    ".xsd": "xml", ".xsl": "xml", ".plist": "xml",
    ".md": "markdown", ".markdown": "markdown", ".rst": "restructuredtext", ".txt": "text",
    ".adoc": "asciidoc", ".tex": "latex", ".org": "org",
    ".cmake": "cmake", ".mk": "make", ".mak": "make", ".nix": "nix", ".tf": "terraform",
    ".hcl": "hcl", ".dockerfile": "dockerfile", ".bzl": "starlark", ".star": "starlark",
    ".s": "assembly", ".asm": "assembly", ".cu": "cuda", ".cuh": "cuda", ".glsl": "glsl",
    ".sol": "solidity", ".ipynb": "json", ".awk": "awk", ".sed": "sed", ".vim": "vim",
    ".tcl": "tcl", ".d": "d", ".pas": "pascal", ".ada": "ada", ".adb": "ada", ".ads": "ada",
    ".cob": "cobol", ".elm": "elm", ".purs": "purescript", ".gleam": "gleam",
    ".cabal": "cabal", ".in": "text", ".am": "make", ".ac": "m4", ".m4": "m4",
}

# Whole file names (exact, case-sensitive) -> language name.
FILENAMES: dict[str, str] = {
    "Makefile": "make", "makefile": "make", "GNUmakefile": "make", "Kbuild": "make",
    "Dockerfile": "dockerfile", "Containerfile": "dockerfile",
    "CMakeLists.txt": "cmake", "Rakefile": "ruby", "Gemfile": "ruby", "Podfile": "ruby",
    "Vagrantfile": "ruby", "Brewfile": "ruby", "Jenkinsfile": "groovy",
    "BUILD": "starlark", "BUILD.bazel": "starlark", "WORKSPACE": "starlark",
    "Pipfile": "toml", "Cargo.lock": "toml", "go.mod": "go-mod", "go.sum": "text",
    "meson.build": "meson", "SConstruct": "python", "SConscript": "python",
    "Justfile": "just", "justfile": "just", "Procfile": "text", "Snakefile": "python",
    ".bashrc": "shell", ".bash_profile": "shell", ".zshrc": "shell", ".profile": "shell",
    ".gitignore": "gitignore", ".gitattributes": "text", ".editorconfig": "ini",
    "README": "text", "LICENSE": "text", "COPYING": "text", "NEWS": "text", "CHANGES": "text",
}

# Interpreter named on a "#!" line -> language name, for extensionless scripts.
SHEBANGS: dict[str, str] = {
    "python": "python", "python3": "python", "python2": "python", "sh": "shell",
    "bash": "shell", "zsh": "shell", "ksh": "shell", "dash": "shell", "node": "javascript",
    "perl": "perl", "ruby": "ruby", "php": "php", "lua": "lua", "tclsh": "tcl", "awk": "awk",
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
            if program == "env" and len(words) > 1:
                program = words[1]
            program = program.rstrip("0123456789.") or program
            return SHEBANGS.get(program) or SHEBANGS.get(program + "3")
    return None


# Language -> (module of its PyPI grammar wheel, function returning the language pointer).
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
}


def grammar_languages() -> frozenset[str]:
    """Languages that have a definition-aware chunker when their grammar wheel is installed."""
    return frozenset(_GRAMMARS)


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
        log.warning("no tree-sitter grammar for %s (%s); using the line-based chunker",
                    language, exc)
        return None
