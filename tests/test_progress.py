"""Progress snapshots and their rendering: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from coarch.progress import (
    IndexProgress,
    ProgressRenderer,
    current_rss,
    describe,
    format_bytes,
    format_duration,
)


def snapshot(**changes: object) -> IndexProgress:
    values: dict[str, object] = {
        "phase": "indexing",
        "files_total": 120,
        "files_to_read": 100,
        "files_done": 50,
        "chunks_embedded": 900,
        "chunks_reused": 100,
        "chunks_estimate": 2000,
        "elapsed": 10.0,
        "embed_seconds": 6.0,
        "rss_bytes": 300 * 2**20,
        "pressure": "low",
        "batch_tokens": 4096,
    }
    values.update(changes)
    return IndexProgress(**values)  # type: ignore[arg-type]


def test_numbers() -> None:
    p = snapshot()
    assert p.chunks_done == 1000 and p.chunks_per_second == 150.0
    assert p.eta_seconds == 10.0  # 1,000 chunks left at 100 chunks/s of elapsed time
    assert snapshot(files_done=0).eta_seconds is None
    line = describe(p)
    for part in (
        "files 50/100 to index (120 found)",
        "chunks 1000/~2000",
        "150 chunks/s",
        "ETA 00:10",
        "RSS 300.0 MiB",
        "pressure low",
        "batch 4096 tok",
    ):
        assert part in line


def test_formats() -> None:
    assert format_duration(None) == "--:--"
    assert format_duration(75) == "01:15" and format_duration(3725) == "1:02:05"
    assert format_bytes(512) == "512 B" and format_bytes(3 * 2**30) == "3.0 GiB"
    assert current_rss() > 10 * 2**20


def test_terminal_bar_is_redrawn_in_place() -> None:
    out = io.StringIO()
    bar = ProgressRenderer(out, tty=True, width=120)
    bar(snapshot())
    bar(snapshot(phase="done", files_done=100, chunks_embedded=1900))
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r[") and "50%" in text and "100%" in text
    assert "\n" not in text and text.endswith("\r\x1b[K")


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    lines = ProgressRenderer(out, tty=False, interval=3600)
    lines(snapshot(phase="scanning"))
    lines(snapshot())  # new phase: printed
    lines(snapshot(files_done=60))  # same phase within the interval: not printed
    lines(snapshot(phase="done"))  # the summary says the rest
    assert out.getvalue().splitlines() == [
        "coarch: scanning: " + describe(snapshot(phase="scanning")),
        "coarch: indexing: " + describe(snapshot()),
    ]
