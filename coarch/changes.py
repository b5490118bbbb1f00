"""What changed in a tree since its index was built: the one rule by which the indexer plans a
run and a freshness check (coarch.freshness: searches, `coarch status`, `coarch watch`) counts
stale files.

A listed file is unchanged when the index holds it with the same size and mtime; otherwise it
is new (not held) or changed, and is read. A held file no longer listed is deleted. No file is
read to decide: whether a changed file's content changed is the reader's question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coarch.discovery import Candidate
from coarch.store import FileState


@dataclass(frozen=True)
class Changes:
    """The listing against the store. `to_read`: new or changed files, in listing order."""

    to_read: list[Candidate]
    new: int  # of to_read, files the index does not hold
    unchanged: int
    deleted: list[str]  # held paths no longer listed

    @property
    def changed(self) -> int:
        return len(self.to_read) - self.new


def compare(candidates: Sequence[Candidate], states: Mapping[str, FileState]) -> Changes:
    """The listed `candidates` against the file states the store holds."""
    to_read: list[Candidate] = []
    new = unchanged = 0
    for c in candidates:
        st = states.get(c.path)
        if st is not None and st.size == c.size and st.mtime_ns == c.mtime_ns:
            unchanged += 1
        else:
            to_read.append(c)
            if st is None:
                new += 1
    listed = {c.path for c in candidates}
    deleted = [p for p in states if p not in listed]
    return Changes(to_read, new, unchanged, deleted)
