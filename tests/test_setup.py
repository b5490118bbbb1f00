"""scripts/setup.sh on failure: one line per step, the failing step named with its last lines,
the full output in the log it names, exit 2. (The success path builds everything for minutes:
run by hand, see README.rst.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SETUP = Path(__file__).resolve().parent.parent / "scripts" / "setup.sh"


def run_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    log = tmp_path / "setup.log"
    full_env = {
        **os.environ,
        "COARCH_VENV": str(tmp_path / "venv"),
        "COARCH_SETUP_LOG": str(log),
        **env,
    }
    return subprocess.run(
        ["bash", str(SETUP)], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_failing_step_is_named_with_its_log(tmp_path: Path) -> None:
    result = run_setup(tmp_path, PYTHON=str(tmp_path / "no-such-python3"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"setup: creating the virtualenv {tmp_path / 'venv'}"
    assert (
        lines[1] == f"setup: error: creating the virtualenv {tmp_path / 'venv'}: failed;"
        " last lines:"
    )
    assert lines[-1] == f"setup: hint: the full output is in {tmp_path / 'setup.log'}"
    assert len(lines) <= 8 and result.stdout == ""
    log = (tmp_path / "setup.log").read_text()
    assert "no-such-python3" in log and "No such file" in log


def test_a_failing_pip_step_keeps_pips_output_in_the_log(tmp_path: Path) -> None:
    # A virtualenv without pip: the build tools step fails at once, without the network.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True
    )
    result = run_setup(tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "setup: installing the build tools (pip, setuptools, wheel, numpy)"
    assert "No module named pip" in result.stderr  # in the last lines shown
    assert len(lines) <= 8
    log = (tmp_path / "setup.log").read_text()
    assert "-m pip install --upgrade pip setuptools wheel numpy" in log
    assert "No module named pip" in log
