#!/usr/bin/env bash
# docs/benchmarks.md "Through a server" (H200): docs/results/h200/server.
# Issue 19 on the GPU machine: the server table beside the in-process table for the full sweep,
# the concurrency table (1, 2, 4, 8 clients at 448x448), and the cache steps through the server,
# for synthetic:qwen3-vl-8b-4bit. Run from the repository root, after .gpu/b/install.sh (which
# installs mlx_vlm.server's packages), with PYTHONPATH holding the machine's site and this checkout:
#   export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && bash benchmarks/gpu_server.sh
# Each stage has its own time limit (seconds: INPROCESS_LIMIT [230], SERVER_LIMIT [300],
# CONCURRENCY_LIMIT [150]; a fresh machine's first session is 1.5-2 minutes slower, most likely
# MLX compiling its CUDA kernels); a stage cut short keeps what its report holds. STAGES picks the stages
# ["inprocess server concurrency"], so that a device call of 10 minutes can take two of them and
# the next call the third. Writes 8 files to $OUT [./gpu-out]:
#   inprocess.json/.txt    the full sweep in process (5 rounds, 64 tokens)
#   server.json/.txt       the full sweep through mlx_vlm.server (5 rounds) and the cache steps
#   concurrency.json/.txt  1, 2, 4, 8 clients at 448x448 (3 rounds after 1 warmup)
#   tables.md              python -m benchmarks.server_tables over the three reports
#   logs.tgz               the servers' logs
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"  # py, model, OUT and the environment
logs=$(mktemp -d)
export TMPDIR=$logs  # the servers' logs (mlxvlm-server-*.log) land here
work=$(mktemp -d -p "$logs" run.XXXX)
trap 'tar -czf "$OUT/logs.tgz" -C "$logs" $(cd "$logs" && ls mlxvlm-server-*.log 2>/dev/null) 2>/dev/null; true' EXIT
common=(-p no:cacheprovider -p no:benchmark --mlx-model "$model" --mlx-max-tokens 64 --rootdir "$work")
stage() {  # stage NAME SECONDS ARGS...: one pytest session, its terminal output in $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  case " ${STAGES:-inprocess server concurrency} " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name ($(date -u +%H:%M:%S), at most ${limit}s)"
  (cd "$work" && timeout -k 15 -s INT "$limit" "$py" -m pytest "${common[@]}" "$@" --mlx-json="$OUT/$name.json" \
    -rfE) > "$OUT/$name.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/$name.txt")"
}
start=$(date +%s)
"$py" -c "import sys, time; from pytest_mlxvlm.models import synthetic as s; t=time.time(); \
p=s.ensure_built(s.parse(sys.argv[1])); print(sys.argv[1], 'at', p, f'in {time.time()-t:.0f}s')" "$model"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null | head -1
# 1. in process, the full sweep
stage inprocess "${INPROCESS_LIMIT:-230}" --mlx-suite images --mlx-rounds 5 --mlx-warmup 1
# 2. through mlx_vlm.server: the full sweep (its own server, APC off as shipped), then the cache
#    steps (a second server with APC_ENABLED=1 and --top-logprobs-k 20)
stage server "${SERVER_LIMIT:-300}" --mlx-suite server --mlx-rounds 5 --mlx-warmup 1 -k "server_generation or server_cache"
# 3. concurrent clients at 448x448, different images (a corner stamp per request)
stage concurrency "${CONCURRENCY_LIMIT:-150}" --mlx-suite server --mlx-resolutions 448x448 --mlx-server-concurrency 1,2,4,8 \
  --mlx-rounds 3 --mlx-warmup 1 --mlx-server-timeout 120 -k server_concurrency
"$py" -m benchmarks.server_tables $(ls "$OUT"/inprocess.json "$OUT"/server.json "$OUT"/concurrency.json 2>/dev/null) \
  > "$OUT/tables.md" 2>&1
cat "$OUT/tables.md"
grep -h "cache steps as expected" "$OUT/server.txt"
echo "gpu_server.sh: $(( $(date +%s) - start )) s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
