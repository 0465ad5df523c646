#!/usr/bin/env bash
# docs/work.md "Measured" (H200): unchanged code and injected regressions judged by the work profile on a GPU machine.
# Issue 25 on the GPU machine, run from the repository root (PYTHONPATH holding the machine's MLX build):
#   bash benchmarks/gpu_work.sh DIR JOBS [BASELINES]
# builds the scratch mlx-vlm repository from the installed mlx_vlm (benchmarks/work_jobs.py), then
# JOBS single pytest jobs per variant into DIR (resumable: DIR may hold a partial run), PARALLEL [6]
# at a time (the work profile does not depend on timing); without BASELINES it records one with
# the base checkout in DIR/baselines, with it (a folder recorded on another machine) it gates
# against that. VARIANTS [all], comma-separated, runs only those. MODEL [synthetic:qwen3-vl-8b-4bit], RESOLUTIONS [224x224,1024x1024], LIMIT [480] s.
# DIR/judge.md holds the table, DIR/machine.txt which machine ran it; $OUT/work.tgz all of DIR.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
dir=$(mkdir -p "${1:?the result folder}" && cd "$1" && pwd)
jobs=${2:?how many jobs per variant}
baselines=${3:+$(cd "$3" && pwd)}
start=$(date +%s)
"$py" -c "from pytest_mlxvlm.common import machine; i = machine.identity(); \
print('chip', i['key'], 'host', machine.host_id(), 'boot', open('/proc/sys/kernel/random/boot_id').read().strip())" \
  | tee -a "$dir/machine.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1 | tee -a "$dir/machine.txt"
"$py" -c "import sys, time; from pytest_mlxvlm.models import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'at', p, f'in {time.time()-t:.0f}s')" "$model"
timeout -k 15 -s INT "${LIMIT:-480}" "$py" -m benchmarks.work_jobs run /tmp/work-scratch "$dir" --jobs "$jobs" \
  --model "$model" --resolutions "${RESOLUTIONS:-224x224,1024x1024}" --parallel "${PARALLEL:-6}" \
  ${VARIANTS:+--variants "$VARIANTS"} ${baselines:+--baselines "$baselines"} 2>&1 | tail -n 20
"$py" -m benchmarks.work_jobs judge "$dir" | tee "$dir/judge.md"
tar -czf "$OUT/work.tgz" -C "$(dirname "$dir")" "$(basename "$dir")"
echo "gpu_work.sh: $(( $(date +%s) - start )) s in all"
