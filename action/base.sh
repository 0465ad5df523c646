#!/usr/bin/env bash
# The base revision the action measures side by side with the checked-out code: $MLXVLM_BASE, or
# with "auto" the merge base of the pull request's target branch and HEAD (none outside pull
# requests). Written to $GITHUB_OUTPUT as base=REV (empty: gate against stored baselines).
set -euo pipefail
base=${MLXVLM_BASE-auto}
if [ "$base" = auto ]; then
  base=""
  if [ -n "${GITHUB_BASE_REF:-}" ]; then
    target="origin/$GITHUB_BASE_REF"
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
      git fetch --quiet --no-tags --unshallow origin || true
    fi
    if ! git rev-parse --verify --quiet "$target^{commit}" >/dev/null; then
      git fetch --quiet --no-tags origin "+refs/heads/$GITHUB_BASE_REF:refs/remotes/$target" || true
    fi
    if ! base=$(git merge-base "$target" HEAD); then
      echo "::error title=pytest-mlxvlm::the merge base of $target and HEAD is not in the clone: check out with fetch-depth: 0 (actions/checkout)"
      exit 1
    fi
  fi
fi
if [ -n "$base" ] && ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "::error title=pytest-mlxvlm::base '$base' is no revision of this clone: fetch it first, or check out with fetch-depth: 0"
  exit 1
fi
echo "pytest-mlxvlm: base revision: ${base:-none (gate against stored baselines)}"
echo "base=$base" >>"${GITHUB_OUTPUT:-/dev/null}"
