#!/usr/bin/env bash
# What the runner's timings are: on GitHub's hosted macOS runners, virtual machines whose GPU is
# not the chip's, a warning and a note in the step summary; on Linux, a note that MLX runs on its
# CPU or CUDA backend there. Nothing on a self-hosted Mac.
set -euo pipefail
os=${RUNNER_OS:-$(uname -s)}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}
if [ "$os" = macOS ] || [ "$os" = Darwin ]; then
  if [ "${MLXVLM_RUNNER_ENVIRONMENT:-}" = github-hosted ]; then
    echo "::warning title=pytest-mlxvlm::GitHub-hosted macOS runners are virtual machines (Metal Performance Shaders unsupported, GPU capped): these timings are not Apple-silicon timings"
    cat >>"$summary" <<'NOTE'
> [!WARNING]
> **These timings are not Apple-silicon timings.** GitHub's hosted arm64 macOS runners are virtual
> machines: GitHub's documentation says Metal Performance Shaders are not supported there, and
> users report the GPU capped (actions/runner-images#11899). A side-by-side A/B verdict (base and
> head on the same VM, in the same minutes) still compares like with like; the absolute figures
> and stored baselines do not describe any Mac. For a chip's figures, use a self-hosted
> Apple-silicon runner.

NOTE
  fi
elif [ "$os" = Linux ]; then
  cat >>"$summary" <<'NOTE'
> [!NOTE]
> On Linux MLX runs on its CPU backend (or CUDA with the cuda12/cuda13 extra): these timings are
> not Apple-silicon timings. A side-by-side A/B verdict still compares base and head on one
> machine.

NOTE
fi
