"""The built-in benchmark suite, collected when --mlx-model is given."""
