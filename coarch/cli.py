"""The `coarch` command: its parser, the command registry, and the one place errors are reported.

Results go to stdout, progress and logs to stderr. Errors are one line, `coarch: error: <what>`,
plus a hint when there is one; tracebacks only with --debug. Exit codes: 0 success (search: hits
found), 1 no hits, 2 usage, configuration, I/O or model error, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM). A reader that goes away (`| head`) ends the output quietly with 0; a
closed stdout ends it quietly with 2.

The commands live in coarch.cli_commands (index, status, search) and coarch.cli_agents (mcp,
watch), their shared options in coarch.cli_options, what they print in coarch.cli_output;
these cli modules are the only ones in coarch that print.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from coarch import cli_agents, cli_commands
from coarch._version import __version__
from coarch.cli_options import EXIT_CODES, Parser
from coarch.cli_output import OutputClosed, use_color, write
from coarch.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CoarchError,
    disk_full_error,
)

# What runs a subcommand: it returns the exit code.
Runner = Callable[[argparse.Namespace], int]

# The command registry: each name's function adding its parser to the subparsers, and its Runner.
# build_parser adds the parsers in this order (that of `coarch --help`); main runs the Runner.
COMMANDS: dict[str, tuple[Callable[[Any], None], Runner]] = {
    "index": (cli_commands.add_index_parser, cli_commands.run_index),
    "status": (cli_commands.add_status_parser, cli_commands.run_status),
    "search": (cli_commands.add_search_parser, cli_commands.run_search),
    "mcp": (cli_agents.add_mcp_parser, cli_agents.run_mcp),
    "watch": (cli_agents.add_watch_parser, cli_agents.run_watch),
}


def build_parser() -> argparse.ArgumentParser:
    """The `coarch` parser with every command of COMMANDS."""
    parser = Parser(
        prog="coarch",
        description="Local code search: index a repository, then search it by meaning and "
        "by keyword.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"coarch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


# ---- entry point ---------------------------------------------------------------------------------


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
        write(sys.stderr, text)


class _quiet_pipe:
    """Ignores a closed or broken stderr while reporting."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, (BrokenPipeError, ValueError, OutputClosed))


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
        _error(
            f"unexpected {type(exc).__name__}: {exc}",
            "rerun with --debug for a traceback, and report it",
            color,
        )
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _occupy_closed_std_fds()
    color = use_color("auto", sys.stderr)
    handler: logging.Handler | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        color = use_color(getattr(args, "color", "auto"), sys.stderr)
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
    except OutputClosed:
        # stdout was closed (`>&-`): nowhere to write, nothing worth saying on stderr either,
        # as for other Unix tools; the exit code tells that the output was lost.
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001  (one line for each; the traceback with --debug)
        return _report_unexpected(exc, color, debug)
    finally:
        if handler is not None:
            logging.getLogger("coarch").removeHandler(handler)
