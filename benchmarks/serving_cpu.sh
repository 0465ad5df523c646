#!/usr/bin/env bash
# Regenerates docs/results/cpu/serving/ (the CPU recordings of docs/serving.md) on synthetic:tiny,
# each stage one pytest session (or script) with its own mlx_vlm.server, under the machine's
# timing lock ($LOCK [/tmp/timing.lock]: never two timing runs at once). From the repository root:
#   bash benchmarks/serving_cpu.sh                 # every stage
#   STAGES="rates soak" bash benchmarks/serving_cpu.sh
#   SERVER=vllm-mlx OUT=docs/results/cpu/serving-vllm-mlx STAGES="concurrency rates workload suitesoak" \
#     SERVER_ARGS=--continuous-batching PYTHONPATH=DIR-WITH-VLLM-MLX bash benchmarks/serving_cpu.sh
#                                                  # vllm-mlx's server instead (--mlx-server, --mlx-server-args)
# Stages and what they write under $OUT [docs/results/cpu/serving]:
#   concurrency  continuous concurrency 1, 2, 4, 8 at 224x224, 64 tokens, 6 requests per client
#                after 1 warm-up per client: concurrency.json/.txt, records/concurrency/ (every request)
#   rounds       the same as synchronized rounds (--mlx-server-concurrency-mode): rounds.json/.txt
#   modes        python -m benchmarks.concurrency_modes: both modes back to back per concurrency
#                (1, 2, 4, 8; 4 requests per client, 3 repeats, alternating order): modes/
#   rates        sweep:6 (1/4 to 6/4 of the capacity measured at 4 clients), 40 s of Poisson arrivals
#                per rate, goodput at TTFT <= 500 ms and ITL p95 <= 50 ms: rates.json/.txt, records/rates/
#   workload     mixed.jsonl (224x224, 448x448, 768x768; two prompt lengths; 32 and 64 tokens; two
#                sessions of three turns) at 1 and 4 clients: workload.json/.txt, records/workload/
#   soak         python -m benchmarks.soak_leak: 500 requests on the unchanged server and on one that
#                keeps every image (224x224, 8 tokens, 4 in flight): leak/ (mlx_vlm.server only)
#   suitesoak    the server suite's own soak of SERVER: 500 requests, 224x224, 8 tokens, 4 in flight:
#                suitesoak.json/.txt
#   crosscheck   python -m benchmarks.server_crosscheck: the plugin against the openai client at 1 and
#                4 clients, 64 tokens, 8 requests per client, 3 repeats: crosscheck/
# and tables.md (python -m benchmarks.serving_tables over the reports). Each stage's .txt starts and
# ends with the machine's load average (uptime): the machine is shared.
set -uo pipefail
[ -f benchmarks/__init__.py ] || { echo "serving_cpu.sh: run it from the repository root" >&2; exit 2; }
py=${PYTHON:-python}
OUT=${OUT:-docs/results/cpu/serving}
LOCK=${LOCK:-/tmp/timing.lock}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
common=(-p no:cacheprovider -p no:benchmark --pyargs pytest_mlxvlm.builtin.test_mlxvlm_server --mlx-suite server
        --mlx-model synthetic:tiny --mlx-server "${SERVER:-mlx_vlm}" --mlx-server-args="${SERVER_ARGS:-}")
want() { case " ${STAGES:-concurrency rounds modes rates workload soak crosscheck} " in *" $1 "*) return 0 ;; esac; return 1; }
stage() {  # stage NAME ARGS...: one pytest session under the lock, its terminal output in $OUT/NAME.txt
  local name=$1
  shift
  want "$name" || return 0
  echo "== $name ($(date -u +%H:%M:%S))"
  (cd "$(mktemp -d)" && flock "$LOCK" sh -c 'echo "# start: $(uptime)"; "$0" "$@"; code=$?; echo "# end: $(uptime)"; exit $code' \
    "$py" -m pytest "${common[@]}" "$@" --mlx-json="$OUT/$name.json" --mlx-server-records="$OUT/records/$name" -rfEs) \
    > "$OUT/$name.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/$name.txt")"
}
closed=(--mlx-resolutions 224x224 --mlx-max-tokens 64 --mlx-warmup 1 --mlx-rounds 6 --mlx-server-concurrency 1,2,4,8
        -k server_concurrency)
stage concurrency "${closed[@]}"
stage rounds "${closed[@]}" --mlx-server-concurrency-mode synchronized-rounds
if want modes; then
  echo "== modes ($(date -u +%H:%M:%S))"
  flock "$LOCK" sh -c 'echo "# start: $(uptime)"; "$0" "$@"; echo "# end: $(uptime)"' "$py" -m benchmarks.concurrency_modes \
    --concurrency 1,2,4,8 --rounds 4 --repeats 3 --max-tokens 64 --out "$OUT/modes" > "$OUT/modes.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/modes.txt")"
fi
stage rates --mlx-resolutions 224x224 --mlx-max-tokens 64 --mlx-warmup 1 --mlx-server-concurrency 4 \
  --mlx-server-rates sweep:6 --mlx-server-duration 40 --mlx-server-slo ttft=500,itl=50 -k server_rate
stage workload --mlx-resolutions 224x224 --mlx-max-tokens 64 --mlx-warmup 1 --mlx-server-concurrency 1,4 \
  --mlx-server-workload="$OUT/mixed.jsonl" -k server_workload
stage suitesoak --mlx-resolutions 224x224 --mlx-max-tokens 8 --mlx-warmup 2 --mlx-server-concurrency 4 \
  --mlx-server-soak 500 -k server_soak
if want soak; then
  echo "== soak ($(date -u +%H:%M:%S))"
  flock "$LOCK" sh -c 'echo "# start: $(uptime)"; "$0" "$@"; echo "# end: $(uptime)"' "$py" -m benchmarks.soak_leak \
    --requests 500 --clients 4 --out "$OUT/leak" > "$OUT/leak.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/leak.txt")"
fi
if want crosscheck; then
  echo "== crosscheck ($(date -u +%H:%M:%S))"
  flock "$LOCK" sh -c 'echo "# start: $(uptime)"; "$0" "$@"; echo "# end: $(uptime)"' "$py" -m benchmarks.server_crosscheck \
    --concurrency 1,4 --requests 8 --repeats 3 --max-tokens 64 --out "$OUT/crosscheck" > "$OUT/crosscheck.txt" 2>&1
  echo "   exit $? ($(date -u +%H:%M:%S)); $(tail -1 "$OUT/crosscheck.txt")"
fi
"$py" -m benchmarks.serving_tables $(ls "$OUT"/concurrency.json "$OUT"/rounds.json "$OUT"/rates.json \
  "$OUT"/workload.json 2>/dev/null) > "$OUT/tables.md" 2>&1
echo "serving_cpu.sh: files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
