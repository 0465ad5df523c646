#!/usr/bin/env bash
# docs/benchmarks.md "A shipped baseline from two machines" (baselines/nvidia-h200, docs/results/h200/baseline-machines).
# Issue 11 on a GPU machine: stored baselines that hold across machines and days.
#   bash benchmarks/gpu_baseline.sh record DIR [N]   N [2] --quick sessions of the unchanged model,
#                                                    each added to DIR (--mlx-update-baselines=add)
#   bash benchmarks/gpu_baseline.sh verify DIR [N]   N [2] unchanged sessions, then one with a ~40%
#                                                    slowdown (mlp:2, benchmarks/slowdown.py), gated
#                                                    against the baselines in DIR (not changed)
# Run from the repository root with PYTHONPATH holding the machine's MLX build and this checkout.
# MODEL [synthetic:qwen3-vl-8b-4bit]; reports to $OUT [./gpu-out]: <mode>-<i>.json/.txt and
# machine.txt (the chip, this host's id as the baselines record it, the boot id: one per machine).
set -uo pipefail
mode=${1:?usage: gpu_baseline.sh record|verify DIR [N]}
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
dir=$(mkdir -p "${2:?the baseline folder}" && cd "$2" && pwd)
n=${3:-2}
"$py" -c "from pytest_mlxvlm.common import machine; i = machine.identity(); \
print('chip', i['key'], 'host', machine.host_id(), 'boot', open('/proc/sys/kernel/random/boot_id').read().strip())" \
  | tee -a "$OUT/machine.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
session() {  # session NAME SLOWDOWN ARGS...
  local name=$1 level=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), slowdown $level)"
  (cd "$work" && MLXVLM_SLOWDOWN=$level "$py" -m pytest -p no:cacheprovider -p no:benchmark -p benchmarks.slowdown \
    --rootdir "$work" --mlx-model "$model" --mlx-suite images --quick --mlx-baseline-dir="$dir" \
    --mlx-json="$OUT/$name.json" -rfE "$@") > "$OUT/$name.txt" 2>&1
  echo "   exit $?: $(grep -E 'mlxvlm baselines' "$OUT/$name.txt" | tail -1) $(tail -1 "$OUT/$name.txt")"
}
case "$mode" in
  record) for i in $(seq "$n"); do session "record-$i" 0 --mlx-update-baselines=add; done ;;
  verify)
    for i in $(seq "$n"); do session "verify-$i" 0; done
    session "verify-slowed" mlp:2 ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
