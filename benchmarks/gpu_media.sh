#!/usr/bin/env bash
# docs/benchmarks.md "the full video table and the batch table" (H200).
# Issues 13 and 15 on one GPU: the CUDA extra (benchmarks/cuda_extra.sh), then the full video
# table with where it stops fitting or timing out, the clip cache steps, and the batch table for
# similar vs mixed sizes, for synthetic:qwen3-vl-8b-4bit. Run from the repository root with
# PYTHONPATH holding the machine's MLX CUDA build and this checkout (as gpu_server.sh). Each stage
# has its own time limit (the whole stays within 9 minutes); a stage cut short keeps its report.
#   WHEELS=DIR BASE_SITE=DIR bash benchmarks/gpu_media.sh     (both optional: see cuda_extra.sh)
# The CUDA extra runs first only with WHEELS set (a wheelhouse) or CUDA_EXTRA=1 (the machine's MLX).
# Stage limits in seconds: VIDEO_LIMIT [180], BEYOND_LIMIT [80], CACHE_LIMIT [90], BATCH_LIMIT [180].
# Writes to $OUT [./gpu-out]: cuda-extra/, video-full and video-beyond (96, 128 frames),
# video-cache and batch, each .json and .txt.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
start=$(date +%s)
echo "== cuda extra ($(date -u +%H:%M:%S))"
# in a clean environment: the extra's own venv, not this machine's PYTHONPATH
if [ -n "${WHEELS:-}" ]; then
  env -u PYTHONPATH -u PYTEST_PLUGINS OUT="$OUT/cuda-extra" timeout -s INT 150 bash benchmarks/cuda_extra.sh \
    > "$OUT/cuda-extra.txt" 2>&1
  echo "   exit $?"
fi
if [ -n "${CUDA_EXTRA:-${WHEELS:-}}" ] && ! grep -q "passed" "$OUT/cuda-extra/session.txt" 2>/dev/null; then
  # without a wheelhouse, or where the extra could not be installed: the machine's MLX as it is
  env -u WHEELS OUT="$OUT/cuda-extra" MLXVLM_SITE="${MLXVLM_SITE:-}" timeout -s INT 90 \
    bash benchmarks/cuda_extra.sh >> "$OUT/cuda-extra.txt" 2>&1
  echo "   (machine's MLX) exit $?"
fi
tail -4 "$OUT/cuda-extra.txt" 2>/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(-p no:cacheprovider -p no:benchmark --rootdir "$work" --mlx-model "$model" --mlx-max-tokens 64 -rfE)
stage() {  # stage NAME SECONDS ARGS...: one pytest session, its terminal output in $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), at most ${limit}s)"
  (cd "$work" && timeout -k 15 -s INT "$limit" "$py" -m pytest "${common[@]}" "$@" --mlx-json="$OUT/$name.json") \
    > "$OUT/$name.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/$name.txt")"
}
# vllm-mlx's ten configurations, then 96 and 128 frames (16 fps on the 10 s clip) in a session of
# their own (the video suite measures in process: a crash there keeps the ten's report)
stage video-full "${VIDEO_LIMIT:-180}" --mlx-suite video -k test_video_generation \
  --mlx-video-configs 2@0.5,4@1,6@1,8@2,12@2,16@2,24@4,32@4,48@8,64@8 --mlx-rounds "${VIDEO_ROUNDS:-3}" --mlx-warmup 1
stage video-beyond "${BEYOND_LIMIT:-80}" --mlx-suite video -k test_video_generation \
  --mlx-video-configs 96@16,128@16 --mlx-rounds "${VIDEO_ROUNDS:-3}" --mlx-warmup 1
stage video-cache "${CACHE_LIMIT:-90}" --mlx-suite video -k test_video_cache
stage batch "${BATCH_LIMIT:-180}" --mlx-suite batch \
  --mlx-rounds "${BATCH_ROUNDS:-5}" --mlx-warmup 1
grep -h -E "^Batch of|cache steps as expected|^\| [0-9]+ frames" "$OUT"/batch.txt "$OUT"/video-*.txt
echo "gpu_media.sh: $(( $(date +%s) - start )) s in all"
