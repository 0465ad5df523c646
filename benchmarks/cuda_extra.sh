#!/usr/bin/env bash
# The CUDA extra on a GPU machine (issue 15), run from the repository root:
#   bash benchmarks/cuda_extra.sh
# 1. what ./run.sh would pick here (nvidia-smi's CUDA version -> cuda12 / cuda13);
# 2. with WHEELS=DIR (a wheelhouse: pip download '.[cuda12]' -d DIR on a machine with PyPI) or
#    with PyPI reachable, a fresh venv gets '.[<that extra>]' and nothing else;
#    without either, the running Python (or MLXVLM_SITE, as in gpu.sh) is used as it is;
# 3. MLX's device and the backend check, then a quick synthetic:tiny session writing the JSON
#    report, a Bencher file and a SQLite history to $OUT (default ./gpu-out/cuda-extra).
set -euo pipefail
[ -f run.sh ] || { echo "cuda_extra.sh: run it from the repository root" >&2; exit 2; }
OUT=${OUT:-gpu-out/cuda-extra}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
source <(sed -n '/^mlx_backend()/,/^}/p' run.sh)
extra=$(mlx_backend)
echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo none)"
echo "run.sh picks: $extra" | tee "$OUT/extra.txt"
py=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ] || "$py" -c "import urllib.request as u; u.urlopen('https://pypi.org/simple/mlx/', timeout=10)" 2>/dev/null; then
  venv=${VENV:-/tmp/mlxvlm-cuda-venv}
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet ${WHEELS:+--no-index --find-links "$WHEELS"} ".[$extra]"
  py=$venv/bin/python
  "$py" -m pip list 2>/dev/null | grep -i -E '^(mlx|mlx-cuda|mlx-cpu|nvidia-)' | tee "$OUT/packages.txt"
else
  echo "no wheelhouse and no PyPI: using $py as installed (MLXVLM_SITE=${MLXVLM_SITE:-none})"
  export PYTHONPATH=${MLXVLM_SITE:+$MLXVLM_SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}
  export PYTEST_PLUGINS=pytest_mlxvlm.plugin
fi
"$py" -c "import mlx.core as mx; print('mlx', mx.__version__, 'device', mx.default_device(), mx.array([1.0, 2.0]) * 2)" \
  | tee "$OUT/device.txt"
"$py" -c "from pytest_mlxvlm.backend import problem; print(problem() or 'backend check: MLX computes here')" \
  | tee -a "$OUT/device.txt"
"$py" -m pytest --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off -p no:cacheprovider \
  --mlx-model synthetic:tiny --quick --mlx-json "$OUT/results.json" --mlx-bmf "$OUT/bmf.json" \
  --mlx-history "sqlite:///$OUT/history.db" 2>&1 | tee "$OUT/session.txt"
