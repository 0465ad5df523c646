#!/usr/bin/env bash
# One pytest session of the action: the model, the base revision side by side (if any), the
# history (if any), the user's own arguments; the Markdown, JSON and JUnit reports in one folder.
# Its outputs: exit-code (pytest's), report, json, dir. It exits 0 itself, so that the comment
# and the upload run; the action's last step fails the job on pytest's status.
set -euo pipefail
dir="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/mlxvlm-report"
out=${GITHUB_OUTPUT:-/dev/null}
mkdir -p "$dir"
rm -f "$dir/report.md" "$dir/results.json" "$dir/junit.xml"
args=(--mlx-model "${MLXVLM_MODEL:?the action needs its model input}"
      --mlx-markdown="$dir/report.md" --mlx-json="$dir/results.json" --junitxml "$dir/junit.xml")
if [ -n "${MLXVLM_AB_BASE:-}" ]; then
  args+=(--mlx-ab-base "$MLXVLM_AB_BASE")
fi
if [ -n "${MLXVLM_HISTORY:-}" ]; then
  args+=(--mlx-history="$MLXVLM_HISTORY")
fi
more=()
if [ -n "${MLXVLM_PYTEST_ARGS:-}" ]; then
  if ! split=$(python -c 'import os, shlex; print("\n".join(shlex.split(os.environ["MLXVLM_PYTEST_ARGS"])))'); then
    echo "::error title=pytest-mlxvlm::pytest-args cannot be split as a shell would (an unclosed quote?): $MLXVLM_PYTEST_ARGS"
    echo "exit-code=4" >>"$out"
    exit 0
  fi
  mapfile -t more <<<"$split"
fi
echo "pytest-mlxvlm: python -m pytest ${args[*]} ${more[*]}"
set +e
python -m pytest "${args[@]}" "${more[@]}"
code=$?
set -e
echo "exit-code=$code" >>"$out"
echo "dir=$dir" >>"$out"
if [ -f "$dir/report.md" ]; then
  echo "report=$dir/report.md" >>"$out"
fi
if [ -f "$dir/results.json" ]; then
  echo "json=$dir/results.json" >>"$out"
fi
case "${MLXVLM_HISTORY:-}" in
  "" | *://*) ;;
  *) if [ -f "$MLXVLM_HISTORY" ]; then cp "$MLXVLM_HISTORY" "$dir/"; fi ;;
esac
