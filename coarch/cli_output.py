"""What coarch's commands print: hits, `--explain` lines, status, and the guarded write to a stream.

Human output escapes control characters (a file name or snippet cannot drive the terminal) and
is coloured only where asked (`--color`, never with NO_COLOR); --json output is written as is.
"""

from __future__ import annotations

import os
import re
from typing import Any, TextIO


class OutputClosed(Exception):
    """The stream to write to was closed before coarch started (`>&-`): Python has no object
    for it."""


def write(stream: TextIO | None, text: str) -> None:
    """Writes and flushes `text`; OutputClosed when `stream` is None (closed at start)."""
    if stream is None:
        raise OutputClosed
    stream.write(text)
    stream.flush()


def use_color(choice: str, stream: TextIO | None) -> bool:
    """Whether to colour `stream` for --color=`choice`: auto means a terminal without NO_COLOR."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR") or stream is None:
        return False
    return stream.isatty()


_STYLE = {
    "path": "35",
    "lines": "32",
    "score": "2",
    "symbol": "1;33",
    "match": "1;31",
    "lineno": "2",
}


# Characters that would move the cursor, end a line or recolour the terminal when printed raw
# (C0 and C1 controls, DEL, Unicode line separators and bidi overrides), and lone surrogates
# (undecodable bytes of a file name), which stdout cannot encode.
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    r"\ud800-\udfff]"
)


def visible(text: str) -> str:
    """`text` with control characters written as Python escapes (`\\n`, `\\x1b`), so that one
    hit stays on its lines and cannot drive the terminal. Human output only; --json is exact."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLE[style]}m{text}\x1b[0m" if color and text else text


def snippet_lines(hit: Any, query: str, count: int) -> list[tuple[int, str]]:
    """Up to `count` (line number, text) pairs of a hit: from the first line holding a query
    word (else the first non-blank line), blank lines skipped."""
    if count <= 0:
        return []
    lines = hit.snippet.splitlines()
    words = [w.lower() for w in re.findall(r"\w+", query) if len(w) > 2]
    start = next(
        (i for i, line in enumerate(lines) if any(w in line.lower() for w in words)),
        next((i for i, line in enumerate(lines) if line.strip()), 0),
    )
    picked = [(hit.start_line + i, lines[i]) for i in range(start, len(lines)) if lines[i].strip()]
    return picked[:count]


def format_explain(explain: dict[str, Any], color: bool) -> str:
    """The `--explain` lines of a hit: each retriever's rank and score, then the fused score,
    the re-rank rules' changes and the definition tier when there are any."""
    parts: list[str] = []
    for retriever in ("semantic", "keyword"):
        if retriever in explain:
            got = explain[retriever]
            parts.append(
                f"{retriever} #{got['rank']} {got['score']:.4f}" if got else f"{retriever} -"
            )
    if "fused" in explain:
        parts.append(f"fused {explain['fused']:.4f}")
    for rule, change in explain.get("rules", {}).items():
        parts.append(f"{rule} {change:+.4f}")
    if explain.get("definition_tier") is not None:
        parts.append(f"definition tier {explain['definition_tier']}")
    return "    " + _paint("why: " + ", ".join(parts), "score", color) + "\n"


def format_hit(hit: Any, query: str, color: bool, lines: int) -> str:
    """`path:start-end  score  symbol` and up to `lines` snippet lines, then a blank line."""
    head = (
        _paint(visible(hit.path), "path", color)
        + ":"
        + _paint(f"{hit.start_line}-{hit.end_line}", "lines", color)
        + "  "
        + _paint(f"{hit.score:.3f}", "score", color)
    )
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


def format_status(s: dict[str, Any]) -> list[str]:
    """The lines of `coarch status` for an Index.status() dict."""
    from coarch.progress import format_bytes

    lines = [
        f"index:      {s['index_dir']} ({format_bytes(s['size_bytes'])})",
        f"root:       {s['root']}",
        f"files:      {s['files']}"
        + (f" (+{s['skipped_files']} skipped by content)" if s.get("skipped_files") else ""),
        f"chunks:     {s['chunks']} ({s['vectors']} cached vectors, FAISS {s['faiss']['state']}"
        + (f", {s['faiss']['kind']}" if s["faiss"].get("kind") else "")
        + ")",
    ]
    if s.get("chunks_without_vector"):
        lines.append(f"            {s['chunks_without_vector']} chunks lack a vector")
    if s.get("languages"):
        lines.append(
            "languages:  " + ", ".join(f"{language} {n}" for language, n in s["languages"].items())
        )
    if s.get("model_id"):
        lines.append(
            f"model:      {s['model_id']} ({s['dim']} dims, max {s['max_seq_length']} tokens)"
        )
    if s.get("precision"):
        lines.append(f"precision:  {s['precision']} ({s.get('precision_reason') or '-'})")
    run = s["last_run"]
    when = run.get("started_iso") or "-"
    secs = f", {run['seconds']:.1f}s" if run.get("seconds") is not None else ""
    lines.append(
        f"last run:   {run['state']}, started {when}{secs}, {run['files_indexed']}"
        f" files indexed, {run['chunks_embedded']} chunks embedded"
    )
    if s.get("locked_by"):
        lines.append(f"running:    `coarch index` pid {s['locked_by']}")
    pending = s.get("pending")
    if pending is None and "pending" in s:
        lines.append("pending:    unknown (the indexed folder is gone)")
    elif pending:
        todo = pending["new"] + pending["changed"] + pending["deleted"]
        lines.append(
            f"pending:    {pending['new']} new, {pending['changed']} changed, "
            f"{pending['deleted']} deleted" + (f" (run `coarch index {s['root']}`)" if todo else "")
        )
    memory = s.get("memory")
    if memory:
        lines.append(
            f"memory:     RSS {memory.get('rss_mb', 0):.0f} MiB (peak"
            f" {memory.get('peak_rss_mb', 0):.0f}), limit {memory.get('limit_mb', 0):.0f} MiB"
            f" ({memory.get('limit_source')}), available {memory.get('available_mb', 0):.0f}"
            f" MiB, pressure {memory.get('pressure')}, batch {memory.get('batch_tokens')}"
            f" tokens, profile {memory.get('profile')}"
        )
    elif "memory" in s:
        lines.append("memory:     no memory manager available")
    return lines
