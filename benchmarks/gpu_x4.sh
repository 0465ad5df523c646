#!/usr/bin/env bash
# docs/benchmarks.md and docs/releases.md, H200 stages run four at once on a 4-GPU machine.
# Four GPU lanes at once on a 4-GPU machine (benchmarks/gpu_lanes.sh), one issue's GPU run each:
# the server tables (19), weightless twins of several families (14), the mlx-vlm release campaign
# (17) and the video and batch tables with the CUDA extra (13, 15). Run from the repository root
# after .gpu/b/install.sh, with the release wheels in $WHEELS_REL and a wheelhouse for the CUDA
# extra in $WHEELS (both optional). Every lane ends within LANE_LIMIT seconds [540]; the lanes'
# folders come back packed in $OUT/lanes.tgz with their logs.
set -uo pipefail
[ -f benchmarks/__init__.py ] || { echo "gpu_x4.sh: run it from the repository root" >&2; exit 2; }
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
limit=${LANE_LIMIT:-540}
lanes=${LANES:-/tmp/mlxvlm-lanes}
rel=${REL_OUT:-/tmp/mlxvlm-releases-out}  # kept between calls: the campaign resumes
rm -rf "$lanes"
twins="synthetic:gemma3-4b-4bit synthetic:smolvlm2-2.2b-4bit synthetic:gemma4-e2b-4bit synthetic:qwen2.5-vl-7b-4bit"
twins+=" synthetic:mistral3-24b-4bit synthetic:qwen3-vl-30b-a3b-4bit"
OUT=$lanes bash benchmarks/gpu_lanes.sh \
  "timeout -s INT $limit bash benchmarks/gpu_server.sh" \
  "MODELS='$twins' BUILD_BUDGET=${BUILD_BUDGET:-180} SWEEP_LIMIT=${SWEEP_LIMIT:-260} timeout -s INT $limit bash benchmarks/gpu_twins.sh" \
  "OUT=$rel MLXVLM_SITE=${MLXVLM_SITE:-/root/site} WHEELS=${WHEELS_REL:-/root/gpu/rel} timeout -s INT $limit bash benchmarks/releases_gpu.sh synthetic:qwen3-vl-8b-4bit 3; cp -r $rel/releases \$OUT/" \
  "timeout -s INT $limit bash benchmarks/gpu_media.sh"
cp "$lanes"/lanes.tgz "$lanes"/lane-*.log "$OUT"/
