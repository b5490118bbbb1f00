#!/usr/bin/env bash
# Runs coarch's whole test suite: set-up first when needed (idempotent), then pytest.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k tokenizer -x
#
# --sanitize (first argument) runs the core under AddressSanitizer + UndefinedBehaviorSanitizer
# instead: the C tests (make -C tests/c asan), then tests/test_core_*.py (or the pytest
# arguments given) against a sanitized build of coarch._core in build/sanitize/lib, with the
# ASan runtime preloaded into Python. The venv's own build is left alone. Sanitizer reports go
# to build/sanitize/reports/ and fail the run. Takes about 10 minutes on 2 cores.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

sanitize=0
if [ "${1:-}" = "--sanitize" ]; then
    sanitize=1
    shift
fi

# CI builds with warnings as errors.
if [ "${CI:-}" = "true" ]; then
    export COARCH_WERROR=1
fi

# The Ray tests (tests/test_distributed.py) need the ray extra; they skip, saying so, without it.
export COARCH_EXTRAS=${COARCH_EXTRAS-ray}
"$root/scripts/setup.sh"

# The engine's plain C tests (no Python), then the same under ASan + UBSan: seconds.
make -s -C "$root/tests/c" check
make -s -C "$root/tests/c" asan

# Lint, format and types (mypy --strict, from pyproject.toml): seconds.
"$root/.venv/bin/ruff" check coarch tests scripts
"$root/.venv/bin/ruff" format --check coarch tests scripts
"$root/.venv/bin/mypy" coarch

if [ "$sanitize" -eq 0 ]; then
    exec "$root/.venv/bin/python" -m pytest "$@"
fi

# A sanitized coarch._core next to symlinks of the Python modules: a package that shadows the
# editable install through PYTHONPATH.
out="$root/build/sanitize"
package="$out/lib/coarch"
echo "test.sh: building the sanitized core into $package (a minute or two)" >&2
COARCH_SANITIZE=address,undefined "$root/.venv/bin/python" setup.py -q build_ext \
    --build-lib "$out/lib" --build-temp "$out/temp" >"$out.log" 2>&1 ||
    { cat "$out.log" >&2; exit 2; }
find "$package" -maxdepth 1 -type l -delete
for file in "$root"/coarch/*.py "$root"/coarch/*.pyi "$root"/coarch/py.typed; do
    ln -s "$file" "$package/"
done

rm -rf "$out/reports"
mkdir -p "$out/reports"
# detect_leaks=0: CPython does not free everything at exit. Reports go to files because pytest
# captures stderr. halt_on_error makes a UBSan finding fatal, as ASan's are.
export LD_PRELOAD
LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS="detect_leaks=0:log_path=$out/reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$out/reports/ubsan"
export PYTHONPATH="$out/lib${PYTHONPATH:+:$PYTHONPATH}"
# `python -c` and `python -m` put the working directory (the repository root, with its coarch/)
# first on sys.path: check from elsewhere, and start pytest through its script.
(cd / && "$root/.venv/bin/python" -c "import coarch._core as c, sys
sys.exit(0 if c.__file__.startswith('$package') else 'not the sanitized core: ' + c.__file__)")
[ $# -eq 0 ] && set -- tests/test_core_*.py \
    --deselect "tests/test_core_memory.py::test_cgroup_usage_counts_in_the_pressure"
# (That test assumes the process's RSS stays under its fixture's 512 MiB cgroup limit; ASan's
# shadow memory takes it past.)
status=0
"$root/.venv/bin/pytest" -p no:cacheprovider "$@" || status=$?
if compgen -G "$out/reports/*" >/dev/null; then
    cat "$out"/reports/* >&2
    echo "test.sh: sanitizer reports above (in $out/reports)" >&2
    exit 1
fi
exit "$status"
