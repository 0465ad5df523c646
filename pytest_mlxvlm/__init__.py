"""pytest-mlxvlm: vision-language-model inference speed on MLX, measured and gated in pytest."""

__version__ = "0.1.0"
