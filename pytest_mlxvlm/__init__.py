"""pytest-mlxvlm: VLM inference benchmarks on MLX as a pytest plugin."""
