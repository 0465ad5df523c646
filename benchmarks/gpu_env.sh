# Support of the gpu_*.sh scripts: what they share (sourced).
# Sourced (from the repository root) by the GPU scripts of benchmarks/: what they share.
#   py     $PYTHON [python3], as an absolute path
#   model  $MODEL [synthetic:qwen3-vl-8b-4bit]
#   OUT    $OUT [./gpu-out], created, as an absolute path
# and exports HF_HUB_OFFLINE=1, PYTHONUNBUFFERED=1, this checkout first on PYTHONPATH, and
# PYTEST_PLUGINS=pytest_mlxvlm.plugin where the package is not installed (where it is, its entry
# point loads the plugin, and naming it again would register it twice).
[ -f benchmarks/__init__.py ] || { echo "$(basename "$0"): run it from the repository root" >&2; exit 2; }
py=$(command -v "${PYTHON:-python3}") || { echo "$(basename "$0"): no interpreter ${PYTHON:-python3}" >&2; exit 2; }
case $py in /*) ;; *) py=$PWD/$py ;; esac
model=${MODEL:-synthetic:qwen3-vl-8b-4bit}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$py" -c "import importlib.metadata as m, sys; \
sys.exit(0 if any(e.name == 'mlxvlm' for e in m.entry_points(group='pytest11')) else 1)" \
  || export PYTEST_PLUGINS=pytest_mlxvlm.plugin
