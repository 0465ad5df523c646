#!/usr/bin/env bash
# docs/benchmarks.md "Weightless twins" (H200): docs/results/h200/twins.
# Issue 14 on the GPU machine: the quick sweep of weightless twins of four families at their
# published sizes, the MoE included (image tokens, Speed, TTFT and % of the bandwidth limit per
# family). Run from the repository root, with PYTHONPATH holding the machine's site and this
# checkout:
#   export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && bash benchmarks/gpu_twins.sh
# Twins are drawn and quantized on the GPU and written once into $PYTEST_MLXVLM_CACHE (default
# $OUT/../twin-cache, so $OUT only holds results): about 5 + 7 + 17 + 13 GB for the four 4-bit
# twins. Builds stop being started after BUILD_BUDGET seconds [300] and the sweep runs at most
# SWEEP_LIMIT seconds [210], so the whole stays within 9 minutes; a model not built in time is
# named in build.txt and left out of the sweep. Writes 4 files to $OUT [./gpu-out]:
#   build.txt     each twin: built or skipped, seconds, and the device
#   quick.json    the sweep's report (--quick: 224², 448², 768², 1024²; 3 rounds after 1 warmup, 64 tokens)
#   quick.txt     its terminal tables
#   tokens.md     image tokens per family and size, from quick.json
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # py, OUT and the environment
models=${MODELS:-"synthetic:qwen2.5-vl-7b-4bit synthetic:gemma3-12b-4bit synthetic:qwen3-vl-30b-a3b-4bit synthetic:mistral3-24b-4bit"}
export PYTEST_MLXVLM_CACHE=${PYTEST_MLXVLM_CACHE:-$OUT/../twin-cache}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
  "$py" -c "import mlx.core as mx, mlx_vlm; print('mlx', mx.__version__, 'mlx-vlm', mlx_vlm.__version__, mx.default_device())"
} > "$OUT/build.txt" 2>&1
built=()
for model in $models; do
  if (( $(date +%s) - start > ${BUILD_BUDGET:-300} )); then
    echo "$model: skipped (build budget spent)" >> "$OUT/build.txt"
    continue
  fi
  if "$py" -c "import sys, time; from pytest_mlxvlm.models import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'built in', f'{time.time()-t:.0f}s at', p)" "$model" \
      >> "$OUT/build.txt" 2>&1; then
    built+=(--mlx-model "$model")
  else
    echo "$model: build failed (above)" >> "$OUT/build.txt"
  fi
done
cat "$OUT/build.txt"
if (( ${#built[@]} )); then
  (cd "$work" && timeout -s INT "${SWEEP_LIMIT:-210}" "$py" -m pytest -p no:cacheprovider -p no:benchmark \
    --rootdir "$work" "${built[@]}" --quick --mlx-rounds 3 --mlx-warmup 1 --mlx-max-tokens 64 --mlx-isolate \
    --mlx-json="$OUT/quick.json" -rfE) > "$OUT/quick.txt" 2>&1
  echo "sweep exit $?"
  "$py" - "$OUT/quick.json" > "$OUT/tokens.md" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
table: dict[str, dict[str, int]] = {}
for case in report["results"]:
    samples = case.get("samples") or [{}]
    table.setdefault(case["model"], {})[case["resolution"]] = samples[0].get("image_tokens")
sizes = sorted({r for row in table.values() for r in row}, key=lambda r: int(r.split("x")[0]))
print("| Twin | " + " | ".join(sizes) + " |")
print("| --- |" + " --- |" * len(sizes))
for model, row in table.items():
    print(f"| {model} | " + " | ".join(str(row.get(s, "")) for s in sizes) + " |")
EOF
  cat "$OUT/tokens.md"
  grep -E "^(=+ mlxvlm|\| [0-9]+x|Average|Aggregate)" "$OUT/quick.txt"
fi
echo "gpu_twins.sh: $(( $(date +%s) - start )) s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
