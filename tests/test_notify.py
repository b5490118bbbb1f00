"""coarch.notify: inotify on a real tree tells whether anything changed since the last look,
at once (no batching window), including in folders created after the start."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coarch.notify import ChangeNotifier

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")


def make_tree(root: Path) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 0\n")
    (root / "src" / "deep" / "util.py").write_text("X = 1\n")
    (root / ".git").mkdir()
    (root / "index").mkdir()
    return root


@pytest.fixture()
def notifier(tmp_path: Path) -> Iterator[ChangeNotifier]:
    root = make_tree(tmp_path / "repo")
    watched = ChangeNotifier(root, excluded=[root / "index"])
    assert watched.start()
    yield watched
    watched.close()


def test_nothing_changed_until_a_file_is_written(notifier: ChangeNotifier) -> None:
    root = notifier.root
    assert not notifier.changed()
    (root / "src" / "deep" / "util.py").write_text("X = 2\n")
    assert notifier.changed()  # the write has returned: its event is already queued
    assert not notifier.changed()


@pytest.mark.parametrize("change", ["create", "delete", "rename", "touch"])
def test_each_kind_of_change_is_seen(notifier: ChangeNotifier, change: str) -> None:
    app = notifier.root / "src" / "app.py"
    if change == "create":
        (notifier.root / "new.py").write_text("pass\n")
    elif change == "delete":
        app.unlink()
    elif change == "rename":
        app.rename(app.with_name("main.py"))
    else:
        os.utime(app, ns=(1, 1))
    assert notifier.changed()


def test_a_folder_created_later_is_watched_too(notifier: ChangeNotifier) -> None:
    (notifier.root / "pkg" / "sub").mkdir(parents=True)
    assert notifier.changed()
    (notifier.root / "pkg" / "sub" / "mod.py").write_text("Y = 1\n")
    assert notifier.changed()


def test_excluded_folder_and_git_are_not_watched(notifier: ChangeNotifier) -> None:
    (notifier.root / "index" / "index.sqlite").write_bytes(b"x")
    (notifier.root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert not notifier.changed()


def test_root_removed_means_changed_for_good(notifier: ChangeNotifier) -> None:
    shutil.rmtree(notifier.root)
    assert notifier.changed()
    assert not notifier.active
    assert notifier.changed()  # it can no longer vouch for anything
