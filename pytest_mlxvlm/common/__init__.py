"""Helpers every layer may use: files and locks, validation of what is read, statistics, the machine, MLX's backend, the bandwidth bound."""
