#!/usr/bin/env bash
# A history of real sessions of synthetic:tiny, one per "commit" c01..cNN, with extra work injected
# into every forward pass (benchmarks/slowdown.py) from commit SLOW_FROM on; then the report
# (report.md, report.html and the plots in OUTDIR/report). Run it from the repository root:
#   bash benchmarks/history_demo.sh OUTDIR [SESSIONS] [SLOW_FROM] [LEVEL]
# $PYTHON is the interpreter [python3]. The published demos are docs/results/history*/ (their
# reports are regenerated from history.jsonl by python -m benchmarks.regenerate).
set -euo pipefail
[ -f benchmarks/__init__.py ] || { echo "history_demo.sh: run it from the repository root" >&2; exit 2; }
out=${1:?usage: history_demo.sh OUTDIR [SESSIONS] [SLOW_FROM] [LEVEL]}
sessions=${2:-12}; slow_from=${3:-8}; level=${4:-cols:200000}
py=${PYTHON:-python3}
mkdir -p "$out"
rm -f "$out/history.jsonl"
for i in $(seq 1 "$sessions"); do
  sha=$(printf 'c%02d' "$i")
  slow=0; [ "$i" -ge "$slow_from" ] && slow=$level
  GITHUB_SHA=$sha GITHUB_REF_NAME=demo MLXVLM_SLOWDOWN=$slow \
    "$py" -m pytest -p benchmarks.slowdown -p no:benchmark -p no:cacheprovider -q \
      --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off \
      --mlx-model synthetic:tiny --mlx-resolutions 224x224,448x448 --mlx-rounds 5 --mlx-max-tokens 32 \
      --mlx-history "$out/history.jsonl" --mlx-missing-baseline warn --mlx-baseline-dir "$out/none" \
      | tail -1 | sed "s/^/$sha (slowdown $slow): /"
done
"$py" -m pytest_mlxvlm report "$out/history.jsonl" --out "$out/report" || echo "report exit code $?"
