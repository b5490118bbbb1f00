"""The argument parsing shared by coarch's commands: the parser class, value types, common options.

Each command's own parser lives with its implementation (coarch.cli_commands,
coarch.cli_agents); what several commands take (-q/-v/--debug/--color, --index, --model,
--memory-limit, --threads, --profile, --no-git, --json) is declared once here, each command
giving only its own help text where it differs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from coarch.errors import UsageError
from coarch.sizes import parse_size

EXIT_CODES = """\
exit codes:
  0    success (search: hits found)
  1    no hits (search)
  2    usage, configuration, I/O or model error (disk full included)
  130  interrupted (Ctrl-C); work done so far is kept
  143  terminated (SIGTERM); work done so far is kept, as after Ctrl-C
output stops quietly when its reader goes away (`| head`: exit 0) or stdout is closed (exit 2)
"""

Number = TypeVar("Number", int, float)


class Parser(argparse.ArgumentParser):
    """argparse with coarch's one-line error format."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def add_command(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser: `help` is its line in `coarch --help`; `description` is prose
    laid out as the source likes, shown as one paragraph above the options; the exit codes
    are the epilog (printed as laid out, hence the raw formatter)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=_paragraph(description),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _paragraph(text: str) -> str:
    """The lines of `text` joined by single spaces, each stripped (spaces within a line kept)."""
    return " ".join(line.strip() for line in text.strip().splitlines())


# ---- value types -----------------------------------------------------------------------------


def _at_least(
    parse: Callable[[str], Number], least: Number, kind: str, too_small: str
) -> Callable[[str], Number]:
    """An argparse type: `parse(text)`, refused with "is not `kind`" when it fails and with
    "`value` `too_small`" below `least`."""

    def convert(text: str) -> Number:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} {too_small}")
        return value

    return convert


positive_int = _at_least(int, 1, "a whole number", "must be at least 1")
count = _at_least(int, 0, "a whole number", "must be 0 or more")
seconds = _at_least(float, 0.0, "a number of seconds", "must be 0 or more")


def size(text: str) -> int:
    """Bytes from "1000", "500K", "2M", "1.5MB" (coarch.sizes.parse_size)."""
    try:
        value = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500K, 2M)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def profile(text: str) -> str:
    from coarch.memory import PROFILES

    name = text.strip().lower()
    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a memory profile (choose from {', '.join(PROFILES)})"
        )
    return name


# ---- options several commands take -----------------------------------------------------------

MODEL_HELP = "model folder (default: the packaged all-MiniLM-L6-v2, or $COARCH_MODEL)"
REPOSITORY_INDEX_HELP = (
    "index folder (default: $COARCH_INDEX_DIR, else the repository's "
    "folder under the user cache folder)"
)

# Each shared option's argparse settings and its usual help; a command may give its own help.
_SHARED: dict[str, dict[str, Any]] = {
    "--index": {"metavar": "DIR", "help": REPOSITORY_INDEX_HELP},
    "--model": {"metavar": "DIR", "help": MODEL_HELP},
    "--memory-limit": {
        "type": positive_int,
        "metavar": "MB",
        "help": "memory limit for embedding, in MiB",
    },
    "--threads": {
        "type": positive_int,
        "metavar": "N",
        "help": "threads for the model (default: the cores available)",
    },
    "--profile": {
        "type": profile,
        "metavar": "NAME",
        "help": "memory profile: default, conservative, aggressive, development",
    },
    "--no-git": {
        "action": "store_true",
        "help": "do not ask git for the file list; apply .gitignore files directly",
    },
    "--json": {"action": "store_true", "help": "write JSON on stdout"},
}


def add_shared(parser: argparse.ArgumentParser, *flags: str, **helps: str) -> None:
    """Adds the shared options `flags`, in that order; `helps` replaces the help of some, keyed
    by the flag's name with "_" for "-" (memory_limit="...")."""
    for flag in flags:
        settings = dict(_SHARED[flag])
        settings["help"] = helps.pop(flag.lstrip("-").replace("-", "_"), settings["help"])
        parser.add_argument(flag, **settings)
    if helps:
        raise TypeError(f"help for options not added: {', '.join(helps)}")


QUIET_HELP = "less output (no progress, no summary); repeat for errors only"


def add_common(parser: argparse.ArgumentParser, quiet_help: str = QUIET_HELP) -> None:
    """-q/--quiet, -v/--verbose, --debug and --color, which every command takes."""
    parser.add_argument("-q", "--quiet", action="count", default=0, help=quiet_help)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output on stderr; repeat for debug logs",
    )
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks on errors")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour on stderr (auto: on a terminal, never with NO_COLOR)",
    )
