#!/usr/bin/env bash
# docs/stores.md "Where results go" (docs/results/h200/cuda-extra): the CUDA extra on a GPU machine.
# The CUDA extra on a GPU machine (issue 15), run from the repository root:
#   bash benchmarks/cuda_extra.sh
# 1. what ./run.sh would pick here (nvidia-smi's CUDA version -> cuda12 / cuda13);
# 2. with WHEELS=DIR (a wheelhouse: pip download '.[cuda12]' -d DIR on a machine with PyPI) or
#    with PyPI reachable, a fresh venv gets '.[<that extra>]' and nothing else;
#    without either, the running Python (or MLXVLM_SITE, as in gpu.sh) is used as it is;
#    BASE_SITE=DIR makes the packages installed in DIR count as installed in that venv;
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
  # built from a copy: a build in the checkout leaves pytest_mlxvlm.egg-info there, whose entry
  # point then registers the plugin a second time for every session run from the checkout
  src=$(mktemp -d)
  tar --exclude=./.git --exclude=./.gpu --exclude='./.venv*' --exclude=./docs -cf - . | tar -xf - -C "$src"
  "$py" -m venv --without-pip "$venv"
  if [ -n "${BASE_SITE:-}" ]; then
    # a machine with no index: packages already installed there (BASE_SITE, e.g. PyTorch's
    # site-packages with its CUDA libraries) count as installed; pip installs the rest from WHEELS
    echo "$BASE_SITE" > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/base-site.pth"
  fi
  "$py" -m pip --python "$venv/bin/python" install --quiet --no-compile \
    ${WHEELS:+--no-index --find-links "$WHEELS"} "$src[$extra]" 2>&1 | tee "$OUT/install.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "installing .[$extra] failed (above)"; exit 1; }
  "$py" -m pip --python "$venv/bin/python" list 2>/dev/null | grep -i -E '^(mlx|mlx-cuda|mlx-cpu|nvidia-)' | tee "$OUT/packages.txt"
  py=$venv/bin/python
else
  echo "no wheelhouse and no PyPI: using $py as installed (MLXVLM_SITE=${MLXVLM_SITE:-none})"
  export PYTHONPATH=${MLXVLM_SITE:+$MLXVLM_SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}
  "$py" -c "import importlib.metadata as m, sys; \
  sys.exit(0 if any(e.name == 'mlxvlm' for e in m.entry_points(group='pytest11')) else 1)" \
    || export PYTEST_PLUGINS=pytest_mlxvlm.plugin
fi
"$py" -c "import mlx.core as mx; print('mlx', mx.__version__, 'device', mx.default_device(), mx.array([1.0, 2.0]) * 2)" \
  | tee "$OUT/device.txt"
"$py" -c "from pytest_mlxvlm.common.backend import problem; print(problem() or 'backend check: MLX computes here')" \
  | tee -a "$OUT/device.txt"
"$py" -m pytest --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off -p no:cacheprovider \
  --mlx-model synthetic:tiny --quick --mlx-json="$OUT/results.json" --mlx-bmf="$OUT/bmf.json" \
  --mlx-history "sqlite:///$OUT/history.db" 2>&1 | tee "$OUT/session.txt"
