#!/usr/bin/env bash
# docs/releases.md "How it is run (H200)": the release campaign on the GPU machine.
# The mlx-vlm release campaign of benchmarks/releases.py on the GPU machine (issue 17, H200 part).
# That machine reaches no package index, so each mlx-vlm 0.7.x release travels as its wheel (pure
# Python, about 3 MB each) and is installed into its own folder beside the machine's MLX CUDA
# build (../shared/gpu/prepare.sh: mlx 0.32.4); a wrapper interpreter per release puts its folder
# first on the import path. Then, as on the CPU: the built-in image suite (--quick) per release in
# release order as a nightly commit into ONE history, the nightly report over it, and the paired
# A/B mode (--mlx-ab-python) between the two releases around each change point it finds (or the
# neighbours named in AB_NEIGHBOURS, e.g. "0.7.3:0.7.4 0.7.8:0.7.9"). Resumable: a finished
# release or A/B run leaves OUT/releases/<name>.done. Run from the repository root:
#   WHEELS=/root/gpu/rel bash benchmarks/releases_gpu.sh [MODEL] [ROUNDS]
# MODEL defaults to synthetic:qwen3-vl-8b-4bit, ROUNDS to 5. $OUT, $MLXVLM_SITE (the CUDA build's
# folder, e.g. /root/site), $PYTHON as in benchmarks/gpu.sh; AB_ARGS adds A/B options; SIZES
# (WxH,...) replaces --quick.
set -euo pipefail
[ -f benchmarks/__init__.py ] || { echo "releases_gpu.sh: run it from the repository root" >&2; exit 2; }
model=${1:-synthetic:qwen3-vl-8b-4bit}
rounds=${2:-5}
wheels=$(cd "${WHEELS:?WHEELS: the folder holding mlx_vlm-0.7.*.whl}" && pwd)
sizes=${SIZES:+--mlx-resolutions $SIZES}
py=$(command -v "${PYTHON:-python3}")
out=${OUT:-gpu-out}/releases
mkdir -p "$out"
out=$(cd "$out" && pwd)
sites=${RELEASE_SITES:-/tmp/mlxvlm-releases}
mkdir -p "$sites"
export PYTHONPATH=${MLXVLM_SITE:+$MLXVLM_SITE:}$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export GITHUB_REF_NAME=releases
# Where the package is not installed, load the plugin by name (as benchmarks/gpu.sh does).
"$py" -c "import importlib.metadata as m, sys; \
sys.exit(0 if any(e.name == 'mlxvlm' for e in m.entry_points(group='pytest11')) else 1)" \
  || export PYTEST_PLUGINS=pytest_mlxvlm.plugin
versions=$(ls "$wheels"/mlx_vlm-*.whl | sed 's/.*mlx_vlm-\([0-9.]*\)-py3.*/\1/' | sort -t. -k1,1n -k2,2n -k3,3n)
for v in $versions; do
  [ -d "$sites/$v" ] || "$py" -m pip install -q --no-index --no-deps --no-compile --target "$sites/$v" \
    "$wheels/mlx_vlm-$v-py3-none-any.whl"
  printf '#!/bin/sh\nPYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH} exec %s "$@"\n' "$sites/$v" "$py" > "$sites/python-$v"
  chmod +x "$sites/python-$v"
done
mkdir -p "$sites/run" && cd "$sites/run"  # an empty folder: pytest collects the built-in suite alone
suite=(-m pytest -p no:cacheprovider -p no:benchmark -q --mlx-model "$model" --mlx-suite images
       --mlx-missing-baseline skip --mlx-baseline-dir="$out/no-baselines")
for v in $versions; do  # release order: each release a nightly commit
  [ -e "$out/$v.done" ] && continue
  rm -f "$out/session-$v.jsonl"
  GITHUB_SHA="$v" "$sites/python-$v" "${suite[@]}" ${sizes:---quick} --mlx-rounds "$rounds" --mlx-json="$out/$v.json" \
    --mlx-history="$out/session-$v.jsonl" > "$out/$v.txt" 2>&1 || true
  tail -3 "$out/$v.txt" | sed "s/^/mlx-vlm $v: /"
  touch "$out/$v.done"
done
: > "$out/history.jsonl"
for v in $versions; do cat "$out/session-$v.jsonl" >> "$out/history.jsonl" 2>/dev/null || true; done
"$py" -m pytest_mlxvlm report "$out/history.jsonl" --out "$out/report" > "$out/report.txt" 2>&1 || true
cat "$out/report.txt"
pairs=${AB_NEIGHBOURS:-$("$py" - "$out/history.jsonl" <<'EOS'
import sys
from pathlib import Path
from benchmarks.releases import change_points, resolution_of
seen = {(cp["before"], cp["after"], resolution_of(cp["case"])) for cp in change_points(Path(sys.argv[1]))}
print(" ".join(f"{b}:{a}:{r}" for b, a, r in sorted(seen) if r))
EOS
)}
for pair in $pairs; do
  base=${pair%%:*}; rest=${pair#*:}; head=${rest%%:*}; sizes=${rest#*:}
  [ "$sizes" = "$rest" ] && sizes=224x224,1024x1024
  name="ab-$base-$head-${sizes//,/_}"
  [ -e "$out/$name.done" ] && continue
  GITHUB_SHA="$head" "$sites/python-$head" "${suite[@]}" --mlx-resolutions "$sizes" \
    --mlx-ab-python="$sites/python-$base" --mlx-json="$out/$name.json" ${AB_ARGS:-} > "$out/$name.txt" 2>&1 || true
  grep -E "A/B|regressed|improved|inconclusive|passed|failed" "$out/$name.txt" | tail -6 | sed "s/^/$name: /"
  touch "$out/$name.done"
done
