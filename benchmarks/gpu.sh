#!/usr/bin/env bash
# Stages of the GPU benchmarks, run on the borrowed GPU machine from the repo root after
# ../shared/gpu/prepare.sh's wheels are installed into /root/site (see docs/benchmarks.md).
#   bash benchmarks/gpu.sh build MODEL...          build synthetic checkpoints into /root/cache
#   bash benchmarks/gpu.sh sweep MODEL...          full sweep, 5 rounds, JSON + baselines to $OUT
#   bash benchmarks/gpu.sh overhead MODEL          plugin runner vs bare stream_generate
#   bash benchmarks/gpu.sh sensitivity MODEL LEVELS SESSIONS [SECONDS [BASELINE_SESSIONS [WORKDIR]]]
#                                                  gated sessions vs slowdowns
set -euo pipefail
export PYTHONPATH=/root/site:$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTEST_MLXVLM_CACHE=${PYTEST_MLXVLM_CACHE:-/root/cache}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# The package is not installed there: load the plugin by name unless its entry point exists.
if ! python3 -c "import importlib.metadata as m, sys; \
sys.exit(0 if any(e.name == 'mlxvlm' for e in m.entry_points(group='pytest11')) else 1)"; then
  export PYTEST_PLUGINS=pytest_mlxvlm.plugin
fi
stage=$1; shift
case "$stage" in
  build)
    for model in "$@"; do
      python3 -c "import sys, time; from pytest_mlxvlm import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'built at', p, f'in {time.time()-t:.0f}s')" "$model"
    done ;;
  sweep)
    for model in "$@"; do
      slug=${model#synthetic:}
      python3 -m pytest -p no:cacheprovider -p no:benchmark \
        --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off \
        --mlx-model "$model" --mlx-rounds 5 --mlx-warmup 1 \
        --mlx-json "$OUT/sweep-$slug.json" --mlx-baseline-dir "$OUT/baselines" \
        --mlx-update-baselines -q
    done ;;
  overhead)
    python3 benchmarks/overhead.py --model "$1" --rounds "${2:-30}" --max-tokens 128 \
      --resolution 448x448 | tee "$OUT/overhead.txt" ;;
  sensitivity)
    # --quick's resolutions and output length; levels take turns; resumable (see the script)
    python3 benchmarks/sensitivity.py --model "$1" --levels "$2" --sessions "$3" --interleave \
      --time-limit "${4:-400}" --baseline-sessions "${5:-5}" \
      --resolutions 224x224,448x448,768x768,1024x1024 --max-tokens 64 --workdir "${6:-/root/sens}" | grep -v '^\(|\|$\|Average\|Aggregate\|synthetic\)' \
      | tee -a "$OUT/sensitivity.txt"
    tar czf "$OUT/sensitivity-sessions.tgz" -C "${6:-/root/sens}" . ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
find "$OUT" -name '.*.lock' -delete
