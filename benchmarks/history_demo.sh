#!/usr/bin/env bash
# docs/results/HISTORY.md and docs/report.md, the nightly history demos: real sessions with a slowdown from one commit on.
# A history of real sessions of synthetic:tiny, one per "commit" c01..cNN, with extra work injected
# into every forward pass (benchmarks/slowdown.py) from commit SLOW_FROM on; then the report
# (the dashboard in OUTDIR/report). Run it from the repository root:
#   bash benchmarks/history_demo.sh OUTDIR [SESSIONS] [SLOW_FROM] [LEVEL] [BUSY]
# BUSY is a comma-separated list of session numbers during which two busy loops share the
# machine's cores (a noisy night: another job on the runner). $PYTHON is the interpreter
# [python3]. The published demos are docs/results/history*/ (their reports are regenerated from
# history.jsonl by python -m benchmarks.regenerate).
set -euo pipefail
[ -f benchmarks/__init__.py ] || { echo "history_demo.sh: run it from the repository root" >&2; exit 2; }
out=${1:?usage: history_demo.sh OUTDIR [SESSIONS] [SLOW_FROM] [LEVEL] [BUSY]}
sessions=${2:-12}; slow_from=${3:-8}; level=${4:-cols:200000}; busy=${5:-}
py=${PYTHON:-python3}
mkdir -p "$out"
rm -f "$out/history.jsonl"
burners=()
stop_burners() {
  for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  burners=()
}
trap stop_burners EXIT
for i in $(seq 1 "$sessions"); do
  sha=$(printf 'c%02d' "$i")
  slow=0; [ "$i" -ge "$slow_from" ] && slow=$level
  note=""
  if [[ ",$busy," == *",$i,"* ]]; then
    for _ in 1 2; do "$py" -c 'while True: pass' & burners+=("$!"); done
    note=", machine busy"
  fi
  GITHUB_SHA=$sha GITHUB_REF_NAME=demo MLXVLM_SLOWDOWN=$slow \
    "$py" -m pytest -p benchmarks.slowdown -p no:benchmark -p no:cacheprovider -q \
      --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off \
      --mlx-model synthetic:tiny --mlx-resolutions 224x224,448x448 --mlx-rounds 5 --mlx-max-tokens 32 \
      --mlx-history="$out/history.jsonl" --mlx-missing-baseline warn --mlx-baseline-dir="$out/none" \
      | tail -1 | sed "s/^/$sha (slowdown $slow$note): /"
  stop_burners
done
"$py" -m pytest_mlxvlm report "$out/history.jsonl" --out "$out/report" || echo "report exit code $?"
