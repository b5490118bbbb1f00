"""File sizes in SI units, as `--max-file-size` takes them and as reports print them."""

from __future__ import annotations


def parse_size(text: str) -> int:
    """Bytes from "1000", "500K", "2M", "1.5MB" (powers of 1000, as ls -h --si); ValueError
    when `text` is not a size."""
    raw = text.strip().upper().removesuffix("B")
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(raw[-1:], 1)
    number = raw[:-1] if scale != 1 else raw
    return int(float(number) * scale)


def human_size(n: int) -> str:
    """Bytes in SI units, as --max-file-size takes them: "1.5 MB", "300 KB"."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.0f} KB"
    return f"{n} B"
