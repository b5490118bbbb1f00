"""`coarch index`, `coarch status` and `coarch search`: each command's parser and what runs it.

Registered in coarch.cli, whose rules they follow: results on stdout (through
coarch.cli_output), progress and logs on stderr, errors raised as CoarchError for cli.main to
report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from coarch.cli_options import (
    add_command,
    add_common,
    add_shared,
    count,
    positive_int,
    seconds,
    size,
)
from coarch.cli_output import format_explain, format_hit, format_status, use_color, write
from coarch.errors import EXIT_OK, UsageError

# ---- coarch index --------------------------------------------------------------------------------


def add_index_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "index",
        "build or update the index of a repository",
        """
        Index a repository or folder: new and changed files are chunked and embedded,
        unchanged ones cost nothing. Safe to stop (Ctrl-C or SIGTERM finish the batch in
        hand and commit) or kill at any time: the next run resumes.""",
    )
    p.add_argument(
        "path",
        nargs="*",
        metavar="PATH",
        help="folders to index, each into its own index (default: the current folder)",
    )
    p.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="also index the folders listed in FILE, one per line (`-`: stdin)",
    )
    add_shared(
        p,
        "--model",
        "--memory-limit",
        "--profile",
        "--threads",
        memory_limit="memory limit for embedding, in MiB (default: from the cgroup or the machine)",
        threads="threads for the model (default: the cores available; more than those "
        "is capped to them, with a warning)",
    )
    p.add_argument(
        "--batch-tokens",
        type=positive_int,
        metavar="N",
        help="padded tokens per model batch (default: sized by the memory manager)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        help="precision of the model's products: bf16 is about 2.8x faster where "
        "the CPU has native bf16; auto picks it there, fp32 elsewhere (default: "
        "$COARCH_PRECISION, else the index's own, else auto); a change rebuilds "
        "the index",
    )
    p.add_argument("--full", action="store_true", help="rebuild from scratch instead of updating")
    add_shared(
        p,
        "--index",
        index="index folder (default: $COARCH_INDEX_DIR, else one per "
        "repository under the user cache folder)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=seconds,
        metavar="SECONDS",
        help="commit work every SECONDS (default: $COARCH_CHECKPOINT_FREQUENCY or 5)",
    )
    p.add_argument(
        "--max-file-size",
        type=size,
        metavar="SIZE",
        help="skip files larger than SIZE (default: 1M)",
    )
    add_shared(
        p, "--no-git", "--json", json="write the summary as JSON on stdout (one line per folder)"
    )
    _add_ray_flags(p)
    add_common(p)


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    from coarch.distributed import DEFAULT_FILES_PER_BATCH, DEFAULT_WORKER_MEMORY_MB

    group = p.add_argument_group(
        "Ray",
        "read, chunk and embed on a Ray cluster; the index stays here (needs the extra:"
        " pip install 'coarch[ray]')",
    )
    group.add_argument(
        "--ray",
        action="store_true",
        help="index on Ray: the cluster at --ray-address, else $RAY_ADDRESS, "
        "else a local one started for the run",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="cluster to join: HOST:PORT, or `auto` for the one `ray start` "
        "runs on this machine (implies --ray)",
    )
    group.add_argument(
        "--ray-workers",
        type=positive_int,
        metavar="N",
        help="actors embedding (default: as many as the cluster's CPUs hold)",
    )
    group.add_argument(
        "--ray-cpus",
        type=positive_int,
        default=1,
        metavar="N",
        help="CPUs (model threads) per actor (default: 1)",
    )
    group.add_argument(
        "--ray-memory",
        type=positive_int,
        default=DEFAULT_WORKER_MEMORY_MB,
        metavar="MB",
        help=f"memory per actor, its memory limit in MiB (default: {DEFAULT_WORKER_MEMORY_MB})",
    )
    group.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        metavar="N",
        help="GPUs per actor; an actor holding one embeds on CUDA (default: 0)",
    )
    group.add_argument(
        "--ray-batch-files",
        type=positive_int,
        default=DEFAULT_FILES_PER_BATCH,
        metavar="N",
        help=f"files per actor call (default: {DEFAULT_FILES_PER_BATCH})",
    )


def _ray_options(args: argparse.Namespace) -> Any:
    """The RayOptions of the flags, or None for a run in this process."""
    if not (args.ray or args.ray_address):
        return None
    from coarch.distributed import RayOptions

    return RayOptions(
        address=args.ray_address,
        workers=args.ray_workers,
        cpus=args.ray_cpus,
        memory_mb=args.ray_memory,
        gpus=args.ray_gpus,
        files_per_batch=args.ray_batch_files,
    )


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
            raise UsageError(
                f"cannot read --from {args.from_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        listed = [line.strip() for line in text.splitlines()]
        paths += [line for line in listed if line and not line.startswith("#")]
        if not paths:
            raise UsageError(f"--from {args.from_file} lists no folder")
    paths = paths or ["."]
    if len(paths) > 1 and args.index is not None:
        raise UsageError(
            f"--index names one index folder, but {len(paths)} folders were given",
            hint="drop --index: each folder gets its own index",
        )
    return paths


def run_index(args: argparse.Namespace) -> int:
    from coarch.discovery import DEFAULT_MAX_FILE_SIZE

    options: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "memory_limit_mb": args.memory_limit,
        "profile": args.profile,
        "batch_tokens": args.batch_tokens,
        "full": args.full,
        "checkpoint_every": args.checkpoint_every,
        "max_file_size": args.max_file_size or DEFAULT_MAX_FILE_SIZE,
        "use_git": not args.no_git,
        "precision": args.precision,
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
                write(results, f"{path}:\n")
            _index_one(args, path, options, results)
    return EXIT_OK


def _index_one(
    args: argparse.Namespace, path: str, options: dict[str, Any], results: TextIO | None
) -> None:
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
        write(results, json.dumps(summary.as_dict()) + "\n")
    elif not args.quiet:
        write(results, "".join(line + "\n" for line in summary.lines()))


# ---- coarch status -------------------------------------------------------------------------------


def add_status_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "status",
        "show what an index holds and what is pending",
        """
        Show an index: location, files, chunks, vectors, model, last run, pending work, size
        on disk; with --memory the memory manager's readings.""",
    )
    p.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="indexed folder (default: the nearest indexed folder from here up)",
    )
    add_shared(p, "--index", index="index folder")
    p.add_argument("--memory", action="store_true", help="add the memory manager's readings")
    add_shared(
        p,
        "--memory-limit",
        "--profile",
        "--json",
        memory_limit="memory limit the readings are computed for",
        profile="memory profile for the readings",
    )
    add_common(p)


def run_status(args: argparse.Namespace) -> int:
    from coarch.index import Index

    with Index(
        args.path, index_dir=args.index, memory_limit_mb=args.memory_limit, profile=args.profile
    ) as index:
        status = index.status(memory=args.memory)
    if args.json:
        write(sys.stdout, json.dumps(status, default=str) + "\n")
    else:
        write(sys.stdout, "".join(line + "\n" for line in format_status(status)))
    return EXIT_OK


# ---- coarch search -------------------------------------------------------------------------------


def add_search_parser(sub: Any) -> None:
    from coarch.search_options import DEFAULT_K, MAX_K, MODES

    p = add_command(
        sub,
        "search",
        "search an index by meaning and by keyword",
        """
        Search the index of the repository you are in (or --index DIR). The default hybrid
        mode fuses semantic (vector) and keyword (BM25) rankings; a bare identifier
        (`parse_config`, `HttpClient.send`) puts its definition first. Results on stdout:
        `path:start-end  score  symbol` and a few lines of the chunk, or JSON Lines with
        --json.""",
    )
    p.add_argument(
        "query",
        nargs="+",
        metavar="QUERY",
        help="words or an identifier (several words need no quotes)",
    )
    p.add_argument(
        "-k",
        type=positive_int,
        default=DEFAULT_K,
        metavar="N",
        help=f"number of hits (default: {DEFAULT_K}; at most {MAX_K}, more is "
        "capped with a warning)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="hybrid",
        help="hybrid (default), semantic (vectors only) or keyword (BM25 only)",
    )
    p.add_argument(
        "--lang",
        action="append",
        metavar="LANG",
        help="only this language (name or extension: python, py, ts; an unknown "
        "one is an error that lists the known ones); repeatable",
    )
    p.add_argument(
        "--path",
        action="append",
        metavar="GLOB",
        help="only paths matching GLOB (.gitignore rules); `!GLOB` excludes; repeatable",
    )
    add_shared(
        p,
        "--index",
        index="index folder (default: $COARCH_INDEX_DIR, else the index of "
        "the repository around the current folder)",
    )
    p.add_argument(
        "-C",
        dest="directory",
        metavar="PATH",
        help="search the repository at PATH as if run there (no `cd` needed)",
    )
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="do not re-index changed files first (by default up to "
        "$COARCH_REFRESH_MAX_FILES, else 20, are; more are only counted)",
    )
    add_shared(p, "--model", model="model folder (default: the one the index was built with)")
    p.add_argument(
        "--all",
        action="store_true",
        help="search every index coarch knows on this machine and merge the hits "
        "(paths shown absolute)",
    )
    p.add_argument(
        "--lines",
        type=count,
        default=3,
        metavar="N",
        help="snippet lines shown per hit (default: 3; 0: none)",
    )
    add_shared(
        p,
        "--json",
        json="JSON Lines on stdout: one object per hit with path, "
        "start_line, end_line, score, language, symbol, snippet",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="show why each hit is there: its rank and score in each retriever, "
        "its fused score and each re-rank rule's change (with --json: an "
        "`explain` object)",
    )
    add_common(
        p, quiet_help="no warnings or notes on stderr, only errors (the hits are still printed)"
    )
    p.set_defaults(quiet_means_errors_only=True)


def run_search(args: argparse.Namespace) -> int:
    from coarch.errors import EXIT_NO_HITS
    from coarch.index import Index

    query = " ".join(args.query)
    if args.all:
        hits = _search_everywhere(args, query)
    else:
        where = search_root(args.directory, args.index)
        with Index(where, index_dir=args.index, model=args.model) as index:
            if not (index.index_dir / "index.sqlite").is_file():
                _raise_no_index(index.root if args.index is None else None, args.index)
            hits = index.search(
                query,
                k=args.k,
                mode=args.mode,
                lang=args.lang,
                path=args.path,
                refresh=not args.no_refresh,
                explain=args.explain,
            )
    if args.json:
        for hit in hits:
            write(sys.stdout, json.dumps(hit.to_dict(), ensure_ascii=False) + "\n")
    else:
        color = use_color(args.color, sys.stdout)
        for hit in hits:
            text = format_hit(hit, query, color, args.lines)
            if hit.explain is not None:
                gap = "\n" if text.endswith("\n\n") else ""
                text = text.rstrip("\n") + "\n" + format_explain(hit.explain, color) + gap
            write(sys.stdout, text)
    return EXIT_OK if hits else EXIT_NO_HITS


def _search_everywhere(args: argparse.Namespace, query: str) -> list[Any]:
    """`search --all`: every known index, hits merged (coarch.registry)."""
    from coarch.errors import IndexNotFoundError
    from coarch.registry import known_indexes, search_all

    if args.index is not None or args.model is not None:
        raise UsageError(
            "--all searches every index with its own model: drop "
            + ("--index" if args.index is not None else "--model")
        )
    indexes = known_indexes()
    if not indexes:
        raise IndexNotFoundError("no index on this machine", hint="run `coarch index PATH` first")
    return search_all(
        query, k=args.k, mode=args.mode, lang=args.lang, path=args.path, indexes=indexes
    )


def _raise_no_index(root: Any, index_dir: str | None) -> NoReturn:
    from coarch.errors import IndexNotFoundError

    if index_dir is not None:
        raise IndexNotFoundError(
            f"no index in {index_dir}: run `coarch index --index {index_dir} PATH` first"
        )
    # Name the repository around the current folder, not the subfolder we happen to be in.
    here = Path(root)
    repo = next((p for p in (here, *here.parents) if (p / ".git").exists()), here)
    raise IndexNotFoundError(f"no index for {repo}: run `coarch index {repo}` first")


def search_root(directory: str | None, index_dir: str | None) -> Path | None:
    """The root `coarch search -C PATH` searches: the nearest indexed folder from PATH up, else
    PATH itself; None without -C (the search looks from the current folder)."""
    from coarch.discovery import check_root
    from coarch.location import INDEX_DIR_ENV, find_indexed_root

    if directory is None:
        return None
    start = check_root(directory)
    if index_dir is not None or os.environ.get(INDEX_DIR_ENV):
        return start
    return find_indexed_root(start) or start
