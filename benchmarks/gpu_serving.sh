#!/usr/bin/env bash
# Issue 27 on the GPU machine: the serving benchmarks of docs/serving.md for
# synthetic:qwen3-vl-8b-4bit through mlx_vlm.server, sized for about 8 minutes of device time.
# Run from the repository root, after .gpu/b/install.sh (mlx_vlm.server's packages), with
# PYTHONPATH holding the machine's site and this checkout:
#   export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && bash benchmarks/gpu_serving.sh
# Three stages, each one pytest session with its own server and time limit (seconds:
# LOAD_LIMIT [420], SOAK_LIMIT [560], LEAK_LIMIT [400]); STAGES picks them ["load"]. Each
# stage fills most of a 10-minute device call, so run them one a call, back to back on one machine:
#   STAGES=load bash benchmarks/gpu_serving.sh   # the build and the load stage: ~7-8 min
#   (PACK_RECORDS=1: load-records/ as load-records.tgz, since a device call returns at most 8 files)
#   STAGES=soak bash benchmarks/gpu_serving.sh   # the 2,000-request soak: ~8-9 min
#   STAGES=leak bash benchmarks/gpu_serving.sh   # the leak: ~4-5 min
#   load   continuous concurrency 1, 2, 4, 8 at 448x448 (DURATION [15] s each after 1 warm-up request per
#          client), the request-rate sweep (sweep:5: 1/4 to 5/4 of the capacity measured at 8 clients, DURATION s
#          of Poisson arrivals each), goodput at TTFT <= 500 ms and ITL p95 <= 50 ms, and the
#          built-in mixed workload (the sweep's sizes 224x224, 448x448, 1024x1024) at 4 clients;
#          every request in load-records/ (JSONL, CSV)
#   soak   SOAK_REQUESTS [2000] requests at 224x224, 8 tokens, 8 in flight, the server's RSS
#          sampled every 10 requests: growth per 100 requests with its interval, and the verdict
#   leak   the same soak of LEAK_REQUESTS [500] on a copy of the server that keeps every image
#          (python -m benchmarks.soak_leak --which leaky): must fail
# Measured (docs/serving.md): each server MLX starts compiles its CUDA kernels on its first
# requests: a soak's first 224x224 prefill of 90 tokens took 118 s on a fresh H100 and 115 s on
# a fresh H200 (soak-failed-2/ and soak-cut/ server logs), past a 120 s --mlx-server-timeout,
# hence SERVER_TIMEOUT [300]. After it the H200's soak ran 5.6 requests/s (224x224, 8 tokens,
# 8 in flight; the prefill dominates, so more clients add little): 2,000 requests take ~360 s,
# ~500 s with the server's start and compile. The load stage took 5 min 20 s on an H100 with
# 10 s a rate. A stage cut at its limit ends without its verdict (its report is partial).
# Writes to $OUT [docs/results/h200/serving]:
#   load.json/.txt, soak.json/.txt, leak/ (leaky.json/.txt, summary.md), load-records/,
#   tables.md (python -m benchmarks.serving_tables), logs.tgz (the servers' logs)
# SERVER [mlx_vlm] and SERVER_ARGS pick the server (--mlx-server, --mlx-server-args), as in serving_cpu.sh:
#   SERVER=vllm-mlx SERVER_ARGS=--continuous-batching OUT=docs/results/h200/serving-vllm-mlx STAGES=load ...
#   with vllm-mlx and its packages on PYTHONPATH (docs/serving.md says which); the leak stage is mlx_vlm's.
set -uo pipefail
export OUT=${OUT:-docs/results/h200/serving}
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
logs=$(mktemp -d)
export TMPDIR=$logs  # the servers' logs (mlxvlm-server-*.log) land here
work=$(mktemp -d -p "$logs" run.XXXX)
# the servers' and workers' logs: mlxvlm-server-*.log, and pytest's kept mlxvlm-logs/ folders
trap 'tar -czf "$OUT/logs.tgz" -C "$logs" $(cd "$logs" && find . -name "*.log" -type f) 2>/dev/null; true' EXIT
common=(-p no:cacheprovider -p no:benchmark --pyargs pytest_mlxvlm.builtin.test_mlxvlm_server --mlx-suite server
        --mlx-model "$model" --rootdir "$work" --mlx-server-timeout "${SERVER_TIMEOUT:-300}"
        --mlx-server "${SERVER:-mlx_vlm}" --mlx-server-args="${SERVER_ARGS:-}")
stage() {  # stage NAME SECONDS ARGS...: one pytest session, its terminal output in $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  case " ${STAGES:-load} " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name ($(date -u +%H:%M:%S), at most ${limit}s)"
  (cd "$work" && timeout -k 15 -s INT "$limit" "$py" -m pytest "${common[@]}" "$@" --mlx-json="$OUT/$name.json" \
    -rfEs) > "$OUT/$name.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/$name.txt")"
}
start=$(date +%s)
"$py" -c "import sys, time; from pytest_mlxvlm.models import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'at', p, f'in {time.time()-t:.0f}s')" "$model"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null | head -1
# 1. closed and open loop, and the mixed workload, in one session (one server, one warm-up)
stage load "${LOAD_LIMIT:-420}" --mlx-resolutions 448x448,224x224,1024x1024 --mlx-max-tokens 64 --mlx-warmup 1 \
  --mlx-rounds 3 --mlx-server-concurrency 1,2,4,8 --mlx-server-rates sweep:5 --mlx-server-duration "${DURATION:-15}" \
  --mlx-server-slo ttft=500,itl=50 --mlx-server-workload mixed --mlx-server-records="$OUT/load-records" \
  -k "server_concurrency or server_rate or (server_workload and c4)"
# 2. the memory soak of the unchanged server
stage soak "${SOAK_LIMIT:-560}" --mlx-resolutions 224x224 --mlx-max-tokens 8 --mlx-warmup 2 \
  --mlx-server-concurrency 8 --mlx-server-soak "${SOAK_REQUESTS:-2000}" -k server_soak
# 3. the injected leak (not in the default STAGES)
case " ${STAGES:-load} " in *" leak "*)
  echo "== leak ($(date -u +%H:%M:%S), at most ${LEAK_LIMIT:-400}s)"
  timeout -k 15 -s INT "${LEAK_LIMIT:-400}" "$py" -m benchmarks.soak_leak --model "$model" --which leaky \
    --requests "${LEAK_REQUESTS:-500}" --clients 8 --out "$OUT/leak" > "$OUT/leak.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S))" ;;
esac
reports=$(ls "$OUT"/load.json "$OUT"/soak.json 2>/dev/null)
if [ -n "$reports" ]; then  # the tables of docs/serving.md, from the stages that wrote a report
  "$py" -m benchmarks.serving_tables $reports > "$OUT/tables.md" 2>&1
  cat "$OUT/tables.md"
fi
if [ -n "${PACK_RECORDS:-}" ] && [ -d "$OUT/load-records" ]; then  # a device call returns at most 8 files
  tar -czf "$OUT/load-records.tgz" -C "$OUT" load-records && rm -rf "$OUT/load-records"
fi
echo "gpu_serving.sh: $(( $(date +%s) - start )) s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
