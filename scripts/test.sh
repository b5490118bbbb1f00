#!/usr/bin/env bash
# Runs coarch's whole test suite: set-up first when needed (idempotent), then pytest.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k tokenizer -x
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# CI builds with warnings as errors.
if [ "${CI:-}" = "true" ]; then
    export COARCH_WERROR=1
fi

"$root/scripts/setup.sh"

# The engine's plain C tests (no Python): seconds.
make -s -C "$root/tests/c" check

exec "$root/.venv/bin/python" -m pytest "$@"
