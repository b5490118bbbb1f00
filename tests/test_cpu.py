"""coarch.cpu: OpenBLAS's kernels are named from the CPU's flags before libtorch loads, unless the
user set OPENBLAS_CORETYPE. Checked in fresh interpreters, where OpenBLAS really loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coarch.cpu import OPENBLAS_CORETYPE, cpu_flags, openblas_core_for

SKYLAKE_X = "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"


def test_flags_are_read_from_the_first_cpu(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: {SKYLAKE_X}\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2\n"
    )
    assert cpu_flags(cpuinfo) == frozenset(SKYLAKE_X.split())
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "core"),
    [
        (SKYLAKE_X, "SkylakeX"),
        ("sse2 avx avx2 fma avx512f", "Haswell"),  # AVX-512 foundation alone is not enough
        ("sse2 avx avx2 fma", "Haswell"),
        ("sse2 avx avx2", None),  # no FMA: left to OpenBLAS
        ("sse2 sse3", None),
    ],
)
def test_the_best_kernel_set_the_flags_allow(flags: str, core: str | None) -> None:
    assert openblas_core_for(frozenset(flags.split())) == core


def loaded_core(environment: dict[str, str]) -> dict[str, str]:
    """OPENBLAS_CORETYPE, who chose it and the kernels OpenBLAS reports, in a fresh process."""
    code = (
        "import json, os, coarch; from coarch import _core, cpu; print(json.dumps({"
        "'variable': os.environ.get('OPENBLAS_CORETYPE'), 'source': cpu.openblas_core_source, "
        "'core': _core.backend_info()['blas_core']}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result


def without_coretype() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != OPENBLAS_CORETYPE}


def test_unset_coretype_is_chosen_from_the_cpu_and_used_by_openblas() -> None:
    chosen = openblas_core_for(cpu_flags())
    result = loaded_core(without_coretype())
    if chosen is None:
        assert result["variable"] is None and result["source"] == "openblas"
    else:
        assert result == {"variable": chosen, "source": "coarch", "core": chosen}


def test_the_users_coretype_is_honoured() -> None:
    result = loaded_core({**without_coretype(), OPENBLAS_CORETYPE: "Prescott"})
    assert result == {"variable": "Prescott", "source": "environment", "core": "Prescott"}
