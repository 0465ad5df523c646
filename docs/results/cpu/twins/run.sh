#!/usr/bin/env bash
# The CPU per-family record of issue 14: the quick sweep of every family's tiny twin (2 layers
# of width 64; vocabulary, special-token ids and processors as published), then the cache suite's
# engine-telling tests per family (basic, same-size images, image order). Run from the repository
# root; pytest runs in an empty folder so that only the built-in suites are collected.
set -u
repo=$(pwd)
out=$repo/docs/results/cpu/twins
py=$repo/.venv/bin/python
names="gemma3-4b gemma4-e2b qwen2.5-vl-3b qwen3-vl-30b-a3b smolvlm2-2.2b lfm2-vl-1.6b mistral3-24b"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
models=()
for name in $names; do models+=(--mlx-model "synthetic:$name-tiny"); done
flock /tmp/timing.lock "$py" -m pytest -p no:cacheprovider -p no:benchmark "${models[@]}" \
  --quick --mlx-rounds 3 --mlx-max-tokens 16 --mlx-json "$out/quick.json" > "$out/quick.txt" 2>&1
for name in $names; do
  flock /tmp/timing.lock "$py" -m pytest -p no:cacheprovider -p no:benchmark \
    --mlx-model "synthetic:$name-tiny" --mlx-suite cache --mlx-max-tokens 4 \
    -k "basic or same_size_images or image_order" > "$out/cache-$name.txt" 2>&1
done
