"""The index lock: one writer at a time, and a message naming the one that holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coarch.errors import IndexLockedError
from coarch.locking import IndexLock, holder


def test_second_writer_is_refused_with_the_pid(tmp_path: Path) -> None:
    first = IndexLock(tmp_path)
    first.acquire()
    try:
        assert holder(tmp_path) == os.getpid()
        with pytest.raises(IndexLockedError, match=rf"index is locked by pid {os.getpid()}"):
            IndexLock(tmp_path).acquire()
    finally:
        first.release()
    assert holder(tmp_path) is None
    with IndexLock(tmp_path) as again:
        assert again.held


def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from coarch.locking import IndexLock\n"
        "IndexLock(sys.argv[1]).acquire()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert done.returncode == -9
    assert (tmp_path / "lock").read_text().strip().isdigit()  # the stale pid stays in the file
    assert holder(tmp_path) is None
    with IndexLock(tmp_path):
        pass
