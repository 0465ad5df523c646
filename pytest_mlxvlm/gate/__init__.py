"""The gate: stored baselines, the statistics of a regression, the paired A/B mode."""
