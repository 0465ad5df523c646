#!/usr/bin/env bash
# Issue 27 on the GPU machine: the serving benchmarks of docs/serving.md for
# synthetic:qwen3-vl-8b-4bit through mlx_vlm.server, sized for about 8 minutes of device time.
# Run from the repository root, after .gpu/b/install.sh (mlx_vlm.server's packages), with
# PYTHONPATH holding the machine's site and this checkout:
#   export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && bash benchmarks/gpu_serving.sh
# Three stages, each one pytest session with its own server and time limit (seconds:
# LOAD_LIMIT [420], SOAK_LIMIT [330], LEAK_LIMIT [240, when asked]); STAGES picks them
# ["load soak"]. Together they may pass a 10-minute device call, so run them as two calls:
#   STAGES=load bash benchmarks/gpu_serving.sh        # the build and the load stage: ~6-7 min
#   STAGES='soak leak' bash benchmarks/gpu_serving.sh # the soak and the leak: ~7-8 min (each server compiles)
#   load   continuous concurrency 1, 2, 4, 8 at 448x448 (DURATION [15] s each after 1 warm-up request per
#          client), the request-rate sweep (sweep:5: 1/4 to 5/4 of the capacity measured at 8 clients, DURATION s
#          of Poisson arrivals each), goodput at TTFT <= 500 ms and ITL p95 <= 50 ms, and the
#          built-in mixed workload (the sweep's sizes 224x224, 448x448, 1024x1024) at 4 clients;
#          every request in load-records/ (JSONL, CSV)
#   soak   SOAK_REQUESTS [2000] requests at 224x224, 8 tokens, 8 in flight, the server's RSS
#          sampled every 10 requests: growth per 100 requests with its interval, and the verdict
#   leak   the same soak of LEAK_REQUESTS [500] on a copy of the server that keeps every image
#          (python -m benchmarks.soak_leak --which leaky): must fail
# On a fresh machine MLX compiles its CUDA kernels on the first requests: on an H100 a soak's
# first 224x224 prefill took 118 s (docs/results/h100/serving/soak-failed-2/server.log), past a
# 120 s --mlx-server-timeout, hence SERVER_TIMEOUT [300]. A fresh machine's first session is 1.5-2 minutes slower: the
# load stage comes first and absorbs it. Expected, from the H200 figures of docs/benchmarks.md
# (448x448 at 8 clients: TTFT p50 813 ms, ITL p50 37 ms): the build ~1 min; load ~5-6 min (server
# start, compile, 4 x 15 s of concurrency, the capacity and 5 x 15 s of arrivals with their drains;
# on an H100 with 10 s each it took 5 min 20 s,
# ~20 workload requests); the soak ~3 min (224x224 with 8 tokens at 8 in flight: ~0.5-0.8 s a
# request, 10-16 requests/s, 2,000 in 130-200 s, plus the server's start). About 8-9 minutes of
# device time in all; a soak cut at SOAK_LIMIT ends without its verdict: run it again alone with SOAK_LIMIT=560.
# Writes to $OUT [docs/results/h200/serving]:
#   load.json/.txt, soak.json/.txt, leak/ (leaky.json/.txt, summary.md), load-records/,
#   tables.md (python -m benchmarks.serving_tables), logs.tgz (the servers' logs)
set -uo pipefail
export OUT=${OUT:-docs/results/h200/serving}
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
logs=$(mktemp -d)
export TMPDIR=$logs  # the servers' logs (mlxvlm-server-*.log) land here
work=$(mktemp -d -p "$logs" run.XXXX)
# the servers' and workers' logs: mlxvlm-server-*.log, and pytest's kept mlxvlm-logs/ folders
trap 'tar -czf "$OUT/logs.tgz" -C "$logs" $(cd "$logs" && find . -name "*.log" -type f) 2>/dev/null; true' EXIT
common=(-p no:cacheprovider -p no:benchmark --pyargs pytest_mlxvlm.builtin.test_mlxvlm_server --mlx-suite server
        --mlx-model "$model" --rootdir "$work" --mlx-server-timeout "${SERVER_TIMEOUT:-300}")
stage() {  # stage NAME SECONDS ARGS...: one pytest session, its terminal output in $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  case " ${STAGES:-load soak} " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name ($(date -u +%H:%M:%S), at most ${limit}s)"
  (cd "$work" && timeout -k 15 -s INT "$limit" "$py" -m pytest "${common[@]}" "$@" --mlx-json "$OUT/$name.json" \
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
  --mlx-server-slo ttft=500,itl=50 --mlx-server-workload mixed --mlx-server-records "$OUT/load-records" \
  -k "server_concurrency or server_rate or (server_workload and c4)"
# 2. the memory soak of the unchanged server
stage soak "${SOAK_LIMIT:-330}" --mlx-resolutions 224x224 --mlx-max-tokens 8 --mlx-warmup 2 \
  --mlx-server-concurrency 8 --mlx-server-soak "${SOAK_REQUESTS:-2000}" -k server_soak
# 3. the injected leak (not in the default STAGES)
case " ${STAGES:-load soak} " in *" leak "*)
  echo "== leak ($(date -u +%H:%M:%S), at most ${LEAK_LIMIT:-240}s)"
  timeout -k 15 -s INT "${LEAK_LIMIT:-240}" "$py" -m benchmarks.soak_leak --model "$model" --which leaky \
    --requests "${LEAK_REQUESTS:-500}" --clients 8 --out "$OUT/leak" > "$OUT/leak.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S))" ;;
esac
"$py" -m benchmarks.serving_tables $(ls "$OUT"/load.json "$OUT"/soak.json 2>/dev/null) > "$OUT/tables.md" 2>&1
cat "$OUT/tables.md"
echo "gpu_serving.sh: $(( $(date +%s) - start )) s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
