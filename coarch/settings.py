"""Numbers read from environment variables, with the one-line ConfigError a bad value gets.

Each caller keeps its own range check (and message): what a number may be is the caller's
rule; how it is read and what a value that does not parse says is this module's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from coarch.errors import ConfigError

N = TypeVar("N", int, float)


def env_number(name: str, default: N, kind: Callable[[str], N], what: str) -> N:
    """$`name` parsed by `kind` (int or float); `default` when it is unset or empty. A value
    that does not parse raises ConfigError "NAME='raw' is not <what>"."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
