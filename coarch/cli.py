"""The `coarch` command: the only module that prints.

Results go to stdout, progress and logs to stderr. Errors are one line, `coarch: error: <what>`,
plus a hint when there is one; tracebacks only with --debug. Exit codes: 0 success (search: hits
found), 1 no hits, 2 usage, configuration, I/O or model error, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM). A reader that goes away (`| head`) ends the output quietly with 0; a
closed stdout ends it quietly with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from coarch import cli_agents
from coarch._version import __version__
from coarch.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CoarchError,
    UsageError,
    disk_full_error,
)

EXIT_CODES = """\
exit codes:
  0    success (search: hits found)
  1    no hits (search)
  2    usage, configuration, I/O or model error (disk full included)
  130  interrupted (Ctrl-C); work done so far is kept
  143  terminated (SIGTERM); work done so far is kept, as after Ctrl-C
output stops quietly when its reader goes away (`| head`: exit 0) or stdout is closed (exit 2)
"""

# What runs a subcommand; COMMANDS (below) maps each name to (function adding its parser, Runner).
Runner = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with coarch's one-line error format."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


# ---- shared options ------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _size(text: str) -> int:
    """Bytes from "1000", "500K", "2M", "1.5MB" (powers of 1000, as ls -h --si)."""
    raw = text.strip().upper().removesuffix("B")
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(raw[-1:], 1)
    number = raw[:-1] if scale != 1 else raw
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500K, 2M)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _profile(text: str) -> str:
    from coarch.memory import PROFILES

    name = text.strip().lower()
    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a memory profile (choose from {', '.join(PROFILES)})")
    return name


QUIET_HELP = "less output (no progress, no summary); repeat for errors only"


def _add_common(parser: argparse.ArgumentParser, quiet_help: str = QUIET_HELP) -> None:
    parser.add_argument("-q", "--quiet", action="count", default=0, help=quiet_help)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output on stderr; repeat for debug logs")
    parser.add_argument("--debug", action="store_true",
                        help="debug logs and tracebacks on errors")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour on stderr (auto: on a terminal, never with NO_COLOR)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coarch",
        description="Local code search: index a repository, then search it by meaning and "
                    "by keyword.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"coarch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (add, _) in COMMANDS.items():
        add(sub)
        del name
    return parser


# ---- coarch index --------------------------------------------------------------------------------

def add_index_parser(sub: Any) -> None:
    p = sub.add_parser(
        "index", help="build or update the index of a repository",
        description="Index a repository or folder: new and changed files are chunked and "
                    "embedded, unchanged ones cost nothing. Safe to stop (Ctrl-C or SIGTERM "
                    "finish the batch in hand and commit) or kill at any time: the next run "
                    "resumes.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="*", metavar="PATH",
                   help="folders to index, each into its own index (default: the current "
                        "folder)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="also index the folders listed in FILE, one per line (`-`: stdin)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the packaged "
                   "all-MiniLM-L6-v2, or $COARCH_MODEL)")
    p.add_argument("--memory-limit", type=_positive_int, metavar="MB",
                   help="memory limit for embedding, in MiB (default: from the cgroup or the "
                        "machine)")
    p.add_argument("--profile", type=_profile, metavar="NAME",
                   help="memory profile: default, conservative, aggressive, development")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="threads for the model (default: the cores available; more than those "
                        "is capped to them, with a warning)")
    p.add_argument("--batch-tokens", type=_positive_int, metavar="N",
                   help="padded tokens per model batch (default: sized by the memory manager)")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                   help="precision of the model's products: bf16 is about 2.8x faster where "
                        "the CPU has native bf16; auto picks it there, fp32 elsewhere (default: "
                        "$COARCH_PRECISION, else the index's own, else auto); a change rebuilds "
                        "the index")
    p.add_argument("--full", action="store_true",
                   help="rebuild from scratch instead of updating")
    p.add_argument("--index", metavar="DIR",
                   help="index folder (default: $COARCH_INDEX_DIR, else one per repository "
                        "under the user cache folder)")
    p.add_argument("--checkpoint-every", type=_seconds, metavar="SECONDS",
                   help="commit work every SECONDS (default: $COARCH_CHECKPOINT_FREQUENCY "
                        "or 5)")
    p.add_argument("--max-file-size", type=_size, metavar="SIZE",
                   help="skip files larger than SIZE (default: 1M)")
    p.add_argument("--no-git", action="store_true",
                   help="do not ask git for the file list; apply .gitignore files directly")
    p.add_argument("--json", action="store_true",
                   help="write the summary as JSON on stdout (one line per folder)")
    _add_ray_flags(p)
    _add_common(p)


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    from coarch.distributed import DEFAULT_FILES_PER_BATCH, DEFAULT_WORKER_MEMORY_MB

    group = p.add_argument_group(
        "Ray", "read, chunk and embed on a Ray cluster; the index stays here (needs the extra:"
               " pip install 'coarch[ray]')")
    group.add_argument("--ray", action="store_true",
                       help="index on Ray: the cluster at --ray-address, else $RAY_ADDRESS, "
                            "else a local one started for the run")
    group.add_argument("--ray-address", metavar="ADDRESS",
                       help="cluster to join: HOST:PORT, or `auto` for the one `ray start` "
                            "runs on this machine (implies --ray)")
    group.add_argument("--ray-workers", type=_positive_int, metavar="N",
                       help="actors embedding (default: as many as the cluster's CPUs hold)")
    group.add_argument("--ray-cpus", type=_positive_int, default=1, metavar="N",
                       help="CPUs (model threads) per actor (default: 1)")
    group.add_argument("--ray-memory", type=_positive_int, default=DEFAULT_WORKER_MEMORY_MB,
                       metavar="MB", help="memory per actor, its memory limit in MiB "
                                          f"(default: {DEFAULT_WORKER_MEMORY_MB})")
    group.add_argument("--ray-gpus", type=float, default=0.0, metavar="N",
                       help="GPUs per actor; an actor holding one embeds on CUDA (default: 0)")
    group.add_argument("--ray-batch-files", type=_positive_int,
                       default=DEFAULT_FILES_PER_BATCH, metavar="N",
                       help=f"files per actor call (default: {DEFAULT_FILES_PER_BATCH})")


def _ray_options(args: argparse.Namespace) -> Any:
    """The RayOptions of the flags, or None for a run in this process."""
    if not (args.ray or args.ray_address):
        return None
    from coarch.distributed import RayOptions

    return RayOptions(address=args.ray_address, workers=args.ray_workers, cpus=args.ray_cpus,
                      memory_mb=args.ray_memory, gpus=args.ray_gpus,
                      files_per_batch=args.ray_batch_files)


def _index_paths(args: argparse.Namespace) -> list[str]:
    """The folders to index: PATH arguments, then those of --from; the current folder when
    neither names one. One --index folder cannot hold several indexes."""
    paths = list(args.path)
    if args.from_file:
        try:
            if args.from_file == "-":
                text = sys.stdin.read() if sys.stdin is not None else ""
            else:
                with open(args.from_file, encoding="utf-8") as fh:
                    text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --from {args.from_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        listed = [line.strip() for line in text.splitlines()]
        paths += [line for line in listed if line and not line.startswith("#")]
        if not paths:
            raise UsageError(f"--from {args.from_file} lists no folder")
    paths = paths or ["."]
    if len(paths) > 1 and args.index is not None:
        raise UsageError(f"--index names one index folder, but {len(paths)} folders were "
                         "given", hint="drop --index: each folder gets its own index")
    return paths


def run_index(args: argparse.Namespace) -> int:
    from coarch.discovery import DEFAULT_MAX_FILE_SIZE

    options: dict[str, Any] = {
        "model": args.model, "threads": args.threads, "memory_limit_mb": args.memory_limit,
        "profile": args.profile, "batch_tokens": args.batch_tokens, "full": args.full,
        "checkpoint_every": args.checkpoint_every,
        "max_file_size": args.max_file_size or DEFAULT_MAX_FILE_SIZE,
        "use_git": not args.no_git, "precision": args.precision,
    }
    paths = _index_paths(args)
    ray = _ray_options(args)
    options["ray"] = ray
    results = sys.stdout
    with contextlib.ExitStack() as stack:
        if ray is not None:
            from coarch.distributed import cluster

            # Ray prints its workers' errors (a worker died, retried) on sys.stdout: they go
            # to stderr with the logs, and stdout keeps only the summaries.
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            stack.enter_context(cluster(ray))  # one connection for every folder
        for path in paths:
            if len(paths) > 1 and not args.quiet and not args.json:
                _write(results, f"{path}:\n")
            _index_one(args, path, options, results)
    return EXIT_OK


def _index_one(args: argparse.Namespace, path: str, options: dict[str, Any],
               results: TextIO | None) -> None:
    from coarch.index import Index
    from coarch.progress import ProgressRenderer

    renderer = None if args.quiet or sys.stderr is None else ProgressRenderer(sys.stderr)
    try:
        with Index(path, index_dir=args.index, **options) as index:
            summary = index.build(progress=renderer)
    finally:
        if renderer is not None:
            renderer.close()
    if args.json:
        _write(results, json.dumps(summary.as_dict()) + "\n")
    elif not args.quiet:
        _write(results, "".join(line + "\n" for line in summary.lines()))


# ---- coarch status -------------------------------------------------------------------------------

def add_status_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="show what an index holds and what is pending",
        description="Show an index: location, files, chunks, vectors, model, last run, "
                    "pending work, size on disk; with --memory the memory manager's readings.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", default=None, metavar="PATH",
                   help="indexed folder (default: the nearest indexed folder from here up)")
    p.add_argument("--index", metavar="DIR", help="index folder")
    p.add_argument("--memory", action="store_true", help="add the memory manager's readings")
    p.add_argument("--memory-limit", type=_positive_int, metavar="MB",
                   help="memory limit the readings are computed for")
    p.add_argument("--profile", type=_profile, metavar="NAME",
                   help="memory profile for the readings")
    p.add_argument("--json", action="store_true", help="write JSON on stdout")
    _add_common(p)


def run_status(args: argparse.Namespace) -> int:
    from coarch.index import Index

    with Index(args.path, index_dir=args.index, memory_limit_mb=args.memory_limit,
               profile=args.profile) as index:
        status = index.status(memory=args.memory)
    if args.json:
        _write(sys.stdout, json.dumps(status, default=str) + "\n")
    else:
        _write(sys.stdout, "".join(line + "\n" for line in format_status(status)))
    return EXIT_OK


def format_status(s: dict[str, Any]) -> list[str]:
    from coarch.progress import format_bytes

    lines = [
        f"index:      {s['index_dir']} ({format_bytes(s['size_bytes'])})",
        f"root:       {s['root']}",
        f"files:      {s['files']}" + (f" (+{s['skipped_files']} skipped by content)"
                                       if s.get("skipped_files") else ""),
        f"chunks:     {s['chunks']} ({s['vectors']} cached vectors, FAISS {s['faiss']['state']}"
        + (f", {s['faiss']['kind']}" if s['faiss'].get('kind') else "") + ")",
    ]
    if s.get("chunks_without_vector"):
        lines.append(f"            {s['chunks_without_vector']} chunks lack a vector")
    if s.get("languages"):
        lines.append("languages:  " + ", ".join(f"{language} {n}"
                                                for language, n in s["languages"].items()))
    if s.get("model_id"):
        lines.append(f"model:      {s['model_id']} ({s['dim']} dims, max {s['max_seq_length']}"
                     " tokens)")
    if s.get("precision"):
        lines.append(f"precision:  {s['precision']} ({s.get('precision_reason') or '-'})")
    run = s["last_run"]
    when = run.get("started_iso") or "-"
    secs = f", {run['seconds']:.1f}s" if run.get("seconds") is not None else ""
    lines.append(f"last run:   {run['state']}, started {when}{secs}, {run['files_indexed']}"
                 f" files indexed, {run['chunks_embedded']} chunks embedded")
    if s.get("locked_by"):
        lines.append(f"running:    `coarch index` pid {s['locked_by']}")
    pending = s.get("pending")
    if pending is None and "pending" in s:
        lines.append("pending:    unknown (the indexed folder is gone)")
    elif pending:
        todo = pending["new"] + pending["changed"] + pending["deleted"]
        lines.append(f"pending:    {pending['new']} new, {pending['changed']} changed, "
                     f"{pending['deleted']} deleted"
                     + (f" (run `coarch index {s['root']}`)" if todo else ""))
    memory = s.get("memory")
    if memory:
        lines.append(
            f"memory:     RSS {memory.get('rss_mb', 0):.0f} MiB (peak"
            f" {memory.get('peak_rss_mb', 0):.0f}), limit {memory.get('limit_mb', 0):.0f} MiB"
            f" ({memory.get('limit_source')}), available {memory.get('available_mb', 0):.0f}"
            f" MiB, pressure {memory.get('pressure')}, batch {memory.get('batch_tokens')}"
            f" tokens, profile {memory.get('profile')}")
    elif "memory" in s:
        lines.append("memory:     no memory manager available")
    return lines


# ---- coarch search -------------------------------------------------------------------------------

def add_search_parser(sub: Any) -> None:
    from coarch.search_options import DEFAULT_K, MAX_K, MODES

    p = sub.add_parser(
        "search", help="search an index by meaning and by keyword",
        description="Search the index of the repository you are in (or --index DIR). The "
                    "default hybrid mode fuses semantic (vector) and keyword (BM25) rankings; a "
                    "bare identifier (`parse_config`, `HttpClient.send`) puts its definition "
                    "first. Results on stdout: `path:start-end  score  symbol` and a few lines "
                    "of the chunk, or JSON Lines with --json.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", nargs="+", metavar="QUERY",
                   help="words or an identifier (several words need no quotes)")
    p.add_argument("-k", type=_positive_int, default=DEFAULT_K, metavar="N",
                   help=f"number of hits (default: {DEFAULT_K}; at most {MAX_K}, more is "
                        "capped with a warning)")
    p.add_argument("--mode", choices=MODES, default="hybrid",
                   help="hybrid (default), semantic (vectors only) or keyword (BM25 only)")
    p.add_argument("--lang", action="append", metavar="LANG",
                   help="only this language (name or extension: python, py, ts; an unknown "
                        "one is an error that lists the known ones); repeatable")
    p.add_argument("--path", action="append", metavar="GLOB",
                   help="only paths matching GLOB (.gitignore rules); `!GLOB` excludes; "
                        "repeatable")
    p.add_argument("--index", metavar="DIR",
                   help="index folder (default: $COARCH_INDEX_DIR, else the index of the "
                        "repository around the current folder)")
    p.add_argument("-C", dest="directory", metavar="PATH",
                   help="search the repository at PATH as if run there (no `cd` needed)")
    p.add_argument("--no-refresh", action="store_true",
                   help="do not re-index changed files first (by default up to "
                        "$COARCH_REFRESH_MAX_FILES, else 20, are; more are only counted)")
    p.add_argument("--model", metavar="DIR",
                   help="model folder (default: the one the index was built with)")
    p.add_argument("--all", action="store_true",
                   help="search every index coarch knows on this machine and merge the hits "
                        "(paths shown absolute)")
    p.add_argument("--lines", type=_count, default=3, metavar="N",
                   help="snippet lines shown per hit (default: 3; 0: none)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines on stdout: one object per hit with path, start_line, "
                        "end_line, score, language, symbol, snippet")
    p.add_argument("--explain", action="store_true",
                   help="show why each hit is there: its rank and score in each retriever, "
                        "its fused score and each re-rank rule's change (with --json: an "
                        "`explain` object)")
    _add_common(p, quiet_help="no warnings or notes on stderr, only errors (the hits are "
                              "still printed)")
    p.set_defaults(quiet_means_errors_only=True)


def run_search(args: argparse.Namespace) -> int:
    from coarch.errors import EXIT_NO_HITS
    from coarch.index import Index

    query = " ".join(args.query)
    if args.all:
        hits = _search_everywhere(args, query)
    else:
        where = cli_agents.search_root(args.directory, args.index)
        with Index(where, index_dir=args.index, model=args.model) as index:
            if not (index.index_dir / "index.sqlite").is_file():
                _raise_no_index(index.root if args.index is None else None, args.index)
            hits = index.search(query, k=args.k, mode=args.mode, lang=args.lang,
                                path=args.path, refresh=not args.no_refresh,
                                explain=args.explain)
    if args.json:
        for hit in hits:
            _write(sys.stdout, json.dumps(hit.to_dict(), ensure_ascii=False) + "\n")
    else:
        color = _use_color(args.color, sys.stdout)
        for hit in hits:
            text = format_hit(hit, query, color, args.lines)
            if hit.explain is not None:
                gap = "\n" if text.endswith("\n\n") else ""
                text = text.rstrip("\n") + "\n" + format_explain(hit.explain, color) + gap
            _write(sys.stdout, text)
    return EXIT_OK if hits else EXIT_NO_HITS


def _search_everywhere(args: argparse.Namespace, query: str) -> list[Any]:
    """`search --all`: every known index, hits merged (coarch.registry)."""
    from coarch.errors import IndexNotFoundError
    from coarch.registry import known_indexes, search_all

    if args.index is not None or args.model is not None:
        raise UsageError("--all searches every index with its own model: drop "
                         + ("--index" if args.index is not None else "--model"))
    indexes = known_indexes()
    if not indexes:
        raise IndexNotFoundError("no index on this machine",
                                 hint="run `coarch index PATH` first")
    return search_all(query, k=args.k, mode=args.mode, lang=args.lang, path=args.path,
                      indexes=indexes)


def _raise_no_index(root: Any, index_dir: str | None) -> NoReturn:
    from pathlib import Path

    from coarch.errors import IndexNotFoundError

    if index_dir is not None:
        raise IndexNotFoundError(f"no index in {index_dir}: run `coarch index --index "
                                 f"{index_dir} PATH` first")
    # Name the repository around the current folder, not the subfolder we happen to be in.
    here = Path(root)
    repo = next((p for p in (here, *here.parents) if (p / ".git").exists()), here)
    raise IndexNotFoundError(f"no index for {repo}: run `coarch index {repo}` first")


_STYLE = {"path": "35", "lines": "32", "score": "2", "symbol": "1;33", "match": "1;31",
          "lineno": "2"}


# Characters that would move the cursor, end a line or recolour the terminal when printed raw
# (C0 and C1 controls, DEL, Unicode line separators and bidi overrides), and lone surrogates
# (undecodable bytes of a file name), which stdout cannot encode.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          r"\ud800-\udfff]")


def visible(text: str) -> str:
    """`text` with control characters written as Python escapes (`\\n`, `\\x1b`), so that one
    hit stays on its lines and cannot drive the terminal. Human output only; --json is exact."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLE[style]}m{text}\x1b[0m" if color and text else text


def snippet_lines(hit: Any, query: str, count: int) -> list[tuple[int, str]]:
    """Up to `count` (line number, text) pairs of a hit: from the first line holding a query
    word (else the first non-blank line), blank lines skipped."""
    import re

    if count <= 0:
        return []
    lines = hit.snippet.splitlines()
    words = [w.lower() for w in re.findall(r"\w+", query) if len(w) > 2]
    start = next((i for i, line in enumerate(lines) if any(w in line.lower() for w in words)),
                 next((i for i, line in enumerate(lines) if line.strip()), 0))
    picked = [(hit.start_line + i, lines[i]) for i in range(start, len(lines))
              if lines[i].strip()]
    return picked[:count]


def format_explain(explain: dict[str, Any], color: bool) -> str:
    """The `--explain` lines of a hit: each retriever's rank and score, then the fused score,
    the re-rank rules' changes and the definition tier when there are any."""
    parts: list[str] = []
    for retriever in ("semantic", "keyword"):
        if retriever in explain:
            got = explain[retriever]
            parts.append(f"{retriever} #{got['rank']} {got['score']:.4f}" if got
                         else f"{retriever} -")
    if "fused" in explain:
        parts.append(f"fused {explain['fused']:.4f}")
    for rule, change in explain.get("rules", {}).items():
        parts.append(f"{rule} {change:+.4f}")
    if explain.get("definition_tier") is not None:
        parts.append(f"definition tier {explain['definition_tier']}")
    return "    " + _paint("why: " + ", ".join(parts), "score", color) + "\n"


def format_hit(hit: Any, query: str, color: bool, lines: int) -> str:
    """`path:start-end  score  symbol` and up to `lines` snippet lines, then a blank line."""
    import re

    head = (_paint(visible(hit.path), "path", color) + ":"
            + _paint(f"{hit.start_line}-{hit.end_line}", "lines", color)
            + "  " + _paint(f"{hit.score:.3f}", "score", color))
    if hit.symbol:
        head += "  " + _paint(visible(hit.symbol), "symbol", color)
    out = [head]
    words = sorted({w for w in re.findall(r"\w+", query) if len(w) > 2}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None
    shown = snippet_lines(hit, query, lines)
    width = len(str(shown[-1][0])) if shown else 0
    for number, text in shown:
        text = visible(text.rstrip().expandtabs(4))
        if color and pattern is not None:
            text = pattern.sub(lambda m: _paint(m.group(0), "match", True), text)
        out.append("  " + _paint(str(number).rjust(width), "lineno", color) + "  " + text)
    return "\n".join(out) + ("\n\n" if shown else "\n")


COMMANDS: dict[str, tuple[Callable[[Any], None], Runner]] = {
    "index": (add_index_parser, run_index),
    "status": (add_status_parser, run_status),
    "search": (add_search_parser, run_search),
    "mcp": (cli_agents.add_mcp_parser, cli_agents.run_mcp),
    "watch": (cli_agents.add_watch_parser, cli_agents.run_watch),
}


# ---- entry point ---------------------------------------------------------------------------------

class _OutputClosed(Exception):
    """The stream to write to was closed before coarch started (`>&-`): Python has no object
    for it."""


def _write(stream: TextIO | None, text: str) -> None:
    if stream is None:
        raise _OutputClosed
    stream.write(text)
    stream.flush()


def _occupy_closed_std_fds() -> None:
    """Puts /dev/null on fds 0-2 where they are closed, so that no file coarch opens later (the
    lock, a temp file) gets one of them and receives what a library prints to stdout or
    stderr. Python's sys.stdout and sys.stderr stay None: writes to them still fail."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _use_color(choice: str, stream: TextIO | None) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR") or stream is None:
        return False
    return stream.isatty()


class _Formatter(logging.Formatter):
    def __init__(self, color: bool) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        if self.color and record.levelno >= logging.WARNING:
            level = f"\x1b[{'31' if record.levelno >= logging.ERROR else '33'}m{level}\x1b[0m"
        text = f"coarch: {level}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _setup_logging(args: argparse.Namespace, color: bool) -> logging.Handler:
    level = logging.WARNING
    quiet = getattr(args, "quiet", 0)
    if quiet and getattr(args, "quiet_means_errors_only", False):
        quiet = max(quiet, 2)
    verbosity = getattr(args, "verbose", 0) - quiet
    if getattr(args, "debug", False) or verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    elif verbosity <= -2:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(color))
    logger = logging.getLogger("coarch")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def _error(message: str, hint: str | None, color: bool, label: str = "error") -> None:
    prefix = f"\x1b[31m{label}\x1b[0m" if color else label
    text = f"coarch: {prefix}: {message}\n" if label else f"coarch: {message}\n"
    if hint:
        text += f"coarch: hint: {hint}\n"
    with _quiet_pipe():
        _write(sys.stderr, text)


class _quiet_pipe:
    """Ignores a closed or broken stderr while reporting."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, (BrokenPipeError, ValueError, _OutputClosed))


def _report(exc: CoarchError, color: bool, debug: bool) -> int:
    """Prints a coarch error (one line and its hint; the traceback with --debug) and returns
    its exit code. A stop on request reads "coarch: interrupted; ..." without "error:"."""
    if debug:
        logging.getLogger("coarch").exception("traceback")
    label = "" if exc.exit_code >= EXIT_INTERRUPTED else "error"
    _error(exc.message, exc.hint, color, label=label)
    return exc.exit_code


def _report_unexpected(exc: Exception, color: bool, debug: bool) -> int:
    """An exception coarch did not raise on purpose: a full disk, another OS error (one line),
    else a bug (one line and a plea; the traceback with --debug)."""
    where = getattr(exc, "filename", None)
    full = disk_full_error(exc, str(where) if where else "the index")
    if full is not None:
        full.__cause__ = exc
        return _report(full, color, debug)
    if debug:
        raise exc
    if isinstance(exc, OSError):
        _error(f"{exc.strerror or exc}{f' ({where})' if where else ''}", None, color)
    else:
        _error(f"unexpected {type(exc).__name__}: {exc}",
               "rerun with --debug for a traceback, and report it", color)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _occupy_closed_std_fds()
    color = _use_color("auto", sys.stderr)
    handler: logging.Handler | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        color = _use_color(getattr(args, "color", "auto"), sys.stderr)
        handler = _setup_logging(args, color)
        return COMMANDS[args.command][1](args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except CoarchError as exc:
        return _report(exc, color, debug)
    except KeyboardInterrupt:
        _error("interrupted", None, color, label="")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`coarch ... | head`): stop quietly, and keep Python from
        # complaining while flushing stdout at exit.
        with _quiet_pipe():
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except _OutputClosed:
        # stdout was closed (`>&-`): nowhere to write, nothing worth saying on stderr either,
        # as for other Unix tools; the exit code tells that the output was lost.
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001  (one line for each; the traceback with --debug)
        return _report_unexpected(exc, color, debug)
    finally:
        if handler is not None:
            logging.getLogger("coarch").removeHandler(handler)
