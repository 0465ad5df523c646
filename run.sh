#!/usr/bin/env bash
# Set-up and entry points for a fresh machine.
#   ./run.sh bench [pytest args...]   quick benchmark of synthetic:tiny, prints the results table
#   ./run.sh test  [pytest args...]   the test suite, in 2 pytest-xdist workers
#   ./run.sh lint                     actionlint, zizmor and shellcheck over action.yml and the workflows
#   ./run.sh docs  [mkdocs args...]   the documentation site, built with --strict into site/
# Creates .venv (Python >= 3.10) and installs the package with its dependencies on first use,
# and again whenever pyproject.toml, constraints.txt or this file changes: mlx and mlx-vlm at the
# versions of constraints.txt (pyproject.toml states ranges), so the suite is reproducible.
# vllm-mlx is installed without its dependencies (torch, gradio, a server stack): the cache suite
# uses only its prefix-cache module, which needs nothing but the standard library.
# MLX's backend is the package's extra that follows mlx's own: none on macOS (Metal comes with
# mlx), cuda13 or cuda12 on Linux with an NVIDIA driver (by the CUDA version nvidia-smi reports),
# cpu on other Linux machines; PYTEST_MLXVLM_BACKEND=cpu|cuda12|cuda13|none overrides the guess.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

mlx_backend() {
  if [ -n "${PYTEST_MLXVLM_BACKEND:-}" ]; then echo "$PYTEST_MLXVLM_BACKEND"; return; fi
  case "$(uname -s)" in
    Darwin) echo none ;;
    Linux)
      local cuda=""
      if command -v nvidia-smi >/dev/null 2>&1; then
        cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
      fi
      if [ -z "$cuda" ]; then echo cpu; elif [ "$cuda" -ge 13 ]; then echo cuda13; else echo cuda12; fi ;;
    *) echo none ;;
  esac
}
BACKEND=$(mlx_backend)
case "$BACKEND" in
  cpu|cuda12|cuda13) extras="dev,$BACKEND" ;;
  none) extras="dev" ;;
  *) echo "run.sh: PYTEST_MLXVLM_BACKEND must be cpu, cuda12, cuda13 or none, not '$BACKEND'" >&2
     exit 2 ;;
esac
stamp="$VENV/.installed-$( (cat pyproject.toml constraints.txt run.sh; echo "$BACKEND") | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # one backend at a time: drop the others' libraries when the backend changes
  others=$(printf '%s\n' mlx-cpu mlx-cuda-12 mlx-cuda-13 | grep -v "^mlx-${BACKEND/cuda/cuda-}$" || true)
  "$VENV/bin/python" -m pip uninstall --quiet --yes $others >/dev/null 2>&1 || true
  echo "run.sh: installing .[$extras] (MLX backend: $BACKEND)" >&2
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[$extras]"
  "$VENV/bin/python" -m pip install --quiet --no-deps 'vllm-mlx==0.6.0'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
what=${1:-}
[ $# -gt 0 ] && shift
case "$what" in
  bench)
    exec "$VENV/bin/pytest" --pyargs pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off \
      --mlx-model synthetic:tiny --quick -p no:cacheprovider "$@" ;;
  test)  # two pytest-xdist workers (PYTEST_MLXVLM_TEST_WORKERS; -n 0 after it runs serially)
    exec "$VENV/bin/pytest" tests -n "${PYTEST_MLXVLM_TEST_WORKERS:-2}" "$@" ;;
  lint)
    workflows=(.github/workflows/*.yml examples/workflows/*.yml)
    PATH="$(cd "$VENV/bin" && pwd):$PATH"  # actionlint runs shellcheck on the run: scripts
    actionlint "${workflows[@]}"
    zizmor --quiet --offline --config .github/zizmor.yml action.yml "${workflows[@]}"
    shellcheck action/*.sh
    echo "run.sh lint: actionlint, zizmor and shellcheck found nothing in action.yml, action/ and ${#workflows[@]} workflows" ;;
  docs)
    NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" build --strict "$@" ;;
  *)
    echo "usage: ./run.sh bench|test [pytest args...] | lint | docs [mkdocs args...]" >&2
    exit 2 ;;
esac
