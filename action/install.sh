#!/usr/bin/env bash
# The action's environment: a virtual environment in $RUNNER_TEMP holding pytest-mlxvlm (this
# action's own copy with its extras, or $MLXVLM_INSTALL) and $MLXVLM_PIP_ARGS, resolved by pip in
# one command; its bin folder goes first on PATH for the job's later steps.
set -euo pipefail
venv="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/mlxvlm-venv"
extras=${MLXVLM_EXTRAS-auto}
if [ "$extras" = auto ]; then
  case "$(uname -s)" in
    Linux) extras=cpu ;;  # mlx on Linux has no backend without an extra
    *) extras="" ;;
  esac
fi
if [ -n "${MLXVLM_INSTALL:-}" ]; then
  requirement=$MLXVLM_INSTALL
else
  requirement="${MLXVLM_ACTION_PATH:?}${extras:+[$extras]}"
fi
python3 -m venv "$venv"
more=()
if [ -n "${MLXVLM_PIP_ARGS:-}" ]; then
  if ! split=$("$venv/bin/python" -c 'import os, shlex; print("\n".join(shlex.split(os.environ["MLXVLM_PIP_ARGS"])))'); then
    echo "::error title=pytest-mlxvlm::pip-args cannot be split as a shell would (an unclosed quote?): $MLXVLM_PIP_ARGS"
    exit 1
  fi
  mapfile -t more <<<"$split"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "pytest-mlxvlm: pip install $requirement ${more[*]}"
"$venv/bin/python" -m pip install "$requirement" "${more[@]}"
"$venv/bin/pytest-mlxvlm" --help >/dev/null
echo "$venv/bin" >>"${GITHUB_PATH:-/dev/null}"
echo "VIRTUAL_ENV=$venv" >>"${GITHUB_ENV:-/dev/null}"
