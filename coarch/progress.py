"""Progress of an indexing run: the snapshot the indexer reports, the tally its estimate is made
from, and its renderers.

The indexer calls `progress(snapshot)` from its main thread; a renderer turns snapshots into a
one-line bar redrawn on a terminal, or into plain lines every few seconds when the stream is not
a terminal. Renderers write to the stream the CLI gives them (stderr)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class IndexProgress:
    phase: str  # "scanning", "indexing", "writing vectors", "done"
    files_total: int  # files found
    files_to_read: int  # new or changed (by size and mtime) among them
    files_done: int  # of files_to_read, committed
    chunks_embedded: int  # chunks whose vector was computed in this run
    chunks_reused: int  # chunks whose vector came from the cache
    chunks_estimate: int  # estimate of all chunks this run will produce
    elapsed: float  # seconds since the run started
    embed_seconds: float  # seconds spent inside the embedder
    rss_bytes: int
    pressure: str | None  # the MemoryManager's reading, when there is one
    batch_tokens: int | None  # the MemoryManager's current batch budget

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    @property
    def chunks_done(self) -> int:
        return self.chunks_embedded + self.chunks_reused

    @property
    def eta_seconds(self) -> float | None:
        if self.files_done == 0 or self.files_to_read == 0 or self.elapsed <= 0:
            return None
        left = max(self.chunks_estimate - self.chunks_done, 0)
        rate = self.chunks_done / self.elapsed
        return left / rate if rate > 0 else None


ProgressCallback = Callable[[IndexProgress], object]


@dataclass
class Tally:
    """What a run's progress estimate is made from, beside its IndexSummary: the files and
    bytes to read, the bytes handed over so far and the chunks they held."""

    files_to_read: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    chunks_seen: int = 0

    def chunks_estimate(self) -> int:
        if self.bytes_done and self.bytes_total:
            return int(self.chunks_seen * self.bytes_total / self.bytes_done)
        return self.chunks_seen


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """Peak RSS of this process (VmHWM) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def pressure_name(value: Any) -> str | None:
    """A MemoryManager pressure (enum member or value) as people read it: "low" ... "critical"."""
    if value is None:
        return None
    name = getattr(value, "name", None)
    return str(name).lower() if name else str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe(p: IndexProgress) -> str:
    """The numbers of a snapshot as one line (without the bar)."""
    parts = [f"files {p.files_done}/{p.files_to_read} to index ({p.files_total} found)"]
    total = max(p.chunks_estimate, p.chunks_done)
    parts.append(f"chunks {p.chunks_done}/{'~' if p.phase != 'done' else ''}{total}")
    parts.append(f"{p.chunks_per_second:.0f} chunks/s")
    parts.append(f"ETA {format_duration(p.eta_seconds)}")
    parts.append(f"RSS {format_bytes(p.rss_bytes)}")
    if p.pressure:
        parts.append(f"pressure {p.pressure}")
    if p.batch_tokens:
        parts.append(f"batch {p.batch_tokens} tok")
    return " | ".join(parts)


class ProgressRenderer:
    """Draws snapshots on `stream`: a redrawn bar on a terminal (at most 10 times a second),
    plain lines every `interval` seconds elsewhere."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval: float = 5.0,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self.width = width
        self._last = 0.0
        self._drawn = False
        self._last_phase = ""

    def __call__(self, p: IndexProgress) -> None:
        now = time.monotonic()
        phase_changed = p.phase != self._last_phase
        self._last_phase = p.phase
        if self.tty:
            if not phase_changed and now - self._last < 0.1 and p.phase != "done":
                return
            self._last = now
            self._draw_bar(p)
        else:
            if p.phase == "done" or (not phase_changed and now - self._last < self.interval):
                return
            self._last = now
            self.stream.write(f"coarch: {p.phase}: {describe(p)}\n")
            self.stream.flush()

    def _draw_bar(self, p: IndexProgress) -> None:
        width = self.width or _terminal_width(self.stream)
        total = max(p.chunks_estimate, p.chunks_done, 1)
        fraction = min(p.chunks_done / total, 1.0) if p.files_to_read else 1.0
        text = f" {fraction * 100:3.0f}% {describe(p)}"
        bar_width = max(10, min(30, width - len(text) - 4))
        filled = int(bar_width * fraction)
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}]{text}"
        self.stream.write("\r" + line[: max(width - 1, 20)] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Ends the bar's line so that what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 100
