#!/usr/bin/env bash
# Support of gpu_x4.sh: several commands at once, each on its own GPU.
# Run several commands at once, each on its own GPU of a multi-GPU machine, and wait for all:
#   bash benchmarks/gpu_lanes.sh "COMMAND FOR GPU 0" "COMMAND FOR GPU 1" ...
# Each command runs from the repository root with CUDA_VISIBLE_DEVICES set to its lane and
# OUT set to $OUT/lane-<i> (its log: $OUT/lane-<i>.log). Every lane is stopped on any exit,
# Ctrl-C included. At the end the lanes' folders are packed into $OUT/lanes.tgz (the device
# tool brings back at most 8 files).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
pids=()
stop() { for pid in "${pids[@]}"; do kill -- -"$pid" 2>/dev/null; done; }
trap stop EXIT INT TERM
i=0
for command in "$@"; do
  mkdir -p "$OUT/lane-$i"
  setsid env CUDA_VISIBLE_DEVICES=$i OUT="$OUT/lane-$i" bash -c "$command" >"$OUT/lane-$i.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done
for pid in "${pids[@]}"; do wait "$pid"; echo "lane pid $pid: exit $?"; done
trap - EXIT
tar czf "$OUT/lanes.tgz" -C "$OUT" $(cd "$OUT" && ls -d lane-*)
