#!/usr/bin/env bash
# docs/benchmarks.md, its GPU stages (sweeps, overhead, sensitivity, A/B): run on the GPU machine.
# Stages of the GPU benchmarks (docs/benchmarks.md), run from the repository root of a checkout
# on the GPU machine:
#   bash benchmarks/gpu.sh build MODEL...          build synthetic checkpoints into $PYTEST_MLXVLM_CACHE
#   bash benchmarks/gpu.sh sweep MODEL...          full sweep, 5 rounds, JSON + baselines to $OUT
#   bash benchmarks/gpu.sh overhead MODEL [ROUNDS] plugin runner vs bare stream_generate
#   bash benchmarks/gpu.sh sensitivity MODEL LEVELS SESSIONS [SECONDS [BASELINE_SESSIONS [WORKDIR]]]
#                                                  gated sessions vs slowdowns (resumable in WORKDIR)
#   bash benchmarks/gpu.sh ab MODEL MODES BLOCKS SECONDS [SIZES]
#                                                  A/A-A/B recording of the paired gate (ab_jobs.py),
#                                                  MODES among turns (or seq), duet, staggered and
#                                                  barrier, in blocks that alternate, each block
#                                                  recording for SECONDS (loading included); appends
#                                                  to $OUT/ab-<mode>/, first copying the committed
#                                                  rounds of $AB_FROM/ab-<mode>/ there, so a
#                                                  recording resumes across device calls; then its
#                                                  judge.txt (fast, 20:40 pairs, and noise) and
#                                                  judge-median.txt (the default estimator); a stream
#                                                  (A/A or A/B) that holds 20 jobs by the cuts of
#                                                  AB_UNTIL's estimators [median, the default; "fast,median":
#                                                  both] is recorded no further; an order other than
#                                                  the default ends once its jobs miss issue 26's
#                                                  acceptance (AB_UNTIL_MISSED=0: records on),
#                                                  and a mode whose both do ends early. One mode a call
#                                                  (at most 8 files come back). AB_MLP [0.1]: the
#                                                  head's slowdown (ab_jobs build --mlp), one scratch
#                                                  repository each; AB_SUFFIX []: appended to the
#                                                  recording's folder (ab-<mode><suffix>)
#   bash benchmarks/gpu.sh adaptive MODEL [SIZES [SECONDS]]
#                                                  --mlx-rounds auto against fixed 5 rounds
#                                                  (adaptive_rounds.py): 2 sessions of each, 64 tokens,
#                                                  SIZES [224x224,1024x1024], no session started after
#                                                  SECONDS [300]; to $OUT/adaptive/ (table.md)
#   bash benchmarks/gpu.sh ab-real MODEL [SIZES]     the plugin's own A/B mode on the scratch repository:
#                                                  one job against the slowed head, one of unchanged code
#                                                  (AB_ARGS: more options, e.g. "--mlx-ab-order barrier")
# Paths come from the environment (defaults in brackets):
#   OUT                   where results go [./gpu-out]
#   MLXVLM_SITE           a folder of installed wheels (pip install --target) put first on
#                         PYTHONPATH, for a machine where MLX's GPU build is not installed in the
#                         running Python [none]
#   PYTEST_MLXVLM_CACHE   synthetic checkpoints [the plugin's default: the user cache folder]
#   SENSITIVITY_WORKDIR   the sensitivity stage's work folder when WORKDIR is not given
#                         [${TMPDIR:-/tmp}/mlxvlm-sensitivity]
#   AB_FROM               committed recordings the ab stage resumes [docs/results/h200 on an
#                         H200, docs/results/h100 on an H100: a recording holds one card's rounds]
#   PYTHON                the interpreter [python3]
set -euo pipefail
[ -f benchmarks/__init__.py ] || { echo "gpu.sh: run it from the repository root" >&2; exit 2; }
export PYTHONPATH=${MLXVLM_SITE:+$MLXVLM_SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
stage=${1:?usage: gpu.sh build|sweep|overhead|sensitivity ARGS... (see the comment at the top)}
shift
py=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Where the package is not installed, load the plugin by name unless its entry point exists.
if ! "$py" -c "import importlib.metadata as m, sys; \
sys.exit(0 if any(e.name == 'mlxvlm' for e in m.entry_points(group='pytest11')) else 1)"; then
  export PYTEST_PLUGINS=pytest_mlxvlm.plugin
fi
case "$stage" in
  build)
    for model in "$@"; do
      "$py" -c "import sys, time; from pytest_mlxvlm.models import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'built at', p, f'in {time.time()-t:.0f}s')" "$model"
    done ;;
  sweep)
    for model in "$@"; do
      slug=${model#synthetic:}
      "$py" -m pytest -p no:cacheprovider -p no:benchmark \
        --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off \
        --mlx-model "$model" --mlx-rounds 5 --mlx-warmup 1 \
        --mlx-json="$OUT/sweep-$slug.json" --mlx-baseline-dir="$OUT/baselines" \
        --mlx-update-baselines -q
    done ;;
  overhead)
    "$py" -m benchmarks.overhead --model "$1" --rounds "${2:-30}" --max-tokens 128 \
      --resolution 448x448 | tee "$OUT/overhead.txt" ;;
  sensitivity)
    # --quick's resolutions and output length; levels take turns; resumable (see the script)
    work=${6:-${SENSITIVITY_WORKDIR:-${TMPDIR:-/tmp}/mlxvlm-sensitivity}}
    "$py" -m benchmarks.sensitivity --model "$1" --levels "$2" --sessions "$3" --interleave \
      --time-limit "${4:-400}" --baseline-sessions "${5:-5}" \
      --resolutions 224x224,448x448,768x768,1024x1024 --max-tokens 64 --workdir "$work" \
      | grep -v '^\(|\|$\|Average\|Aggregate\|synthetic\)' | tee -a "$OUT/sensitivity.txt"
    tar czf "$OUT/sensitivity-sessions.tgz" -C "$work" . ;;
  ab)
    scratch=${TMPDIR:-/tmp}/mlxvlm-ab-scratch-${AB_MLP:-0.1}  # one scratch repository a slowdown
    sfx=${AB_SUFFIX:-}  # each recording's folder: ab-<mode><sfx>, under $OUT and the committed results
    [ -d "$scratch/repo" ] || "$py" -m benchmarks.ab_jobs build "$scratch" --mlp "${AB_MLP:-0.1}"
    modes=${2//seq/turns}
    # resume this card's own recording: docs/results/h200 on an H200, docs/results/h100 on an H100
    card=$("$py" -c "from pytest_mlxvlm.common import machine; k = machine.identity()['key']; \
print(next((c for c in ('h200', 'h100') if c in k), k))")
    for mode in ${modes//,/ }; do
      from=${AB_FROM:-docs/results/$card}/ab-$mode$sfx
      mkdir -p "$OUT/ab-$mode$sfx"
      if ! ls "$OUT/ab-$mode$sfx"/rounds-*.jsonl >/dev/null 2>&1 && ls "$from"/rounds-*.jsonl >/dev/null 2>&1; then
        cp "$from"/rounds-*.jsonl "$OUT/ab-$mode$sfx/"  # resume the committed recording
        [ -f "$from/workers.json" ] && cp "$from/workers.json" "$OUT/ab-$mode$sfx/"
        echo "resuming $from: $(cat "$from"/rounds-*.jsonl | wc -l) lines"
      fi
    done
    default=$("$py" -c "from pytest_mlxvlm.config.settings import ABPlan; print(ABPlan.order)")
    for _ in $(seq "$3"); do
      for mode in ${modes//,/ }; do
        # an order other than the default ends once its jobs miss the acceptance (AB_UNTIL_MISSED=0: never)
        missed=()
        [ "$mode" != "$default" ] && [ "${AB_UNTIL_MISSED:-1}" = 1 ] && missed=(--until-missed)
        "$py" -m benchmarks.ab_jobs record "$scratch" "$OUT/ab-$mode$sfx" --model "$1" \
          --sizes "${5:-224x224,1024x1024}" --steps 100000 --tokens 64 --time-limit "$4" --order "$mode" \
          --jobs 20 --pairs 20:40 --estimators "${AB_UNTIL:-median}" "${missed[@]}"
      done
    done
    for mode in ${modes//,/ }; do
      dir=$OUT/ab-$mode$sfx
      { "$py" -m benchmarks.ab_jobs judge "$dir" --jobs 20 --pairs 20:40; echo;
        "$py" -m benchmarks.ab_noise "$dir"; } | tee "$dir/judge.txt"
      "$py" -m benchmarks.ab_jobs judge "$dir" --jobs 20 --pairs 20:40 --estimator median | tee "$dir/judge-median.txt"
      # the workers' logs that hold a line (all empty on a clean run: then no logs.tgz)
      (cd "$dir" || exit 0; find . -maxdepth 1 -name 'worker-*.log' -size 0 -delete
       ls worker-*.log >/dev/null 2>&1 && tar czf logs.tgz worker-*.log && rm -f worker-*.log) || true
    done ;;
  adaptive)
    "$py" -m benchmarks.adaptive_rounds --model "$1" --resolutions "${2:-224x224,1024x1024}" --max-tokens 64 \
      --pairs 2 --case-budget 60 --time-limit "${3:-300}" --workdir "$OUT/adaptive" | tee "$OUT/adaptive.log"
    rm -rf "$OUT/adaptive/baselines" ;;
  ab-real)
    scratch=${TMPDIR:-/tmp}/mlxvlm-ab-real
    if [ ! -f "$scratch/slowed.sha" ]; then
      "$py" -m benchmarks.ab_jobs build "$scratch" --mlp "${AB_MLP:-0.1}"
      git -C "$scratch/repo" rev-parse HEAD >"$scratch/slowed.sha"
    fi
    slowed=$(cat "$scratch/slowed.sha")
    for job in ab aa; do
      # ab: the head is the slowed commit, the base the one before; aa: both the unchanged commit
      if [ "$job" = ab ]; then head=$slowed base=$slowed~1; else head=$slowed~1 base=$slowed~1; fi
      git -C "$scratch/repo" checkout -q --detach "$head"
      (cd "$scratch/repo" && "$py" -m pytest -p no:cacheprovider -p no:benchmark --rootdir . \
        --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off --mlx-model "$1" --quick \
        --mlx-resolutions "${2:-224x224,1024x1024}" --mlx-ab-base "$base" ${AB_ARGS:-} \
        --mlx-json="$OUT/ab-real-$job.json" --mlx-markdown="$OUT/ab-real-$job.md" -q) \
        | tee "$OUT/ab-real-$job.txt" || true
    done ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
find "$OUT" -name '.*.lock' -delete
