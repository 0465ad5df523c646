#!/usr/bin/env bash
# Set-up and entry points for a fresh machine.
#   ./run.sh bench [pytest args...]   quick benchmark of synthetic:tiny, prints the results table
#   ./run.sh test  [pytest args...]   the test suite
# Creates .venv (Python >= 3.10) and installs the package with its dependencies on first use,
# and again whenever pyproject.toml or this file changes. vllm-mlx is installed without its
# dependencies (torch, gradio, a server stack): the cache suite uses only its prefix-cache
# module, which needs nothing but the standard library.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
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
  test)
    exec "$VENV/bin/pytest" tests "$@" ;;
  *)
    echo "usage: ./run.sh bench|test [pytest args...]" >&2
    exit 2 ;;
esac
