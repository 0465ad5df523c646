"""Benchmark and experiment scripts for pytest-mlxvlm; not part of the installed package.

``python -m benchmarks`` lists every script with its first line: which documented table or
figure it regenerates, or which scripts it supports; ``benchmarks/probes/`` holds one-off probes
whose findings are written down. Run each from the repository root as a module, for example::

    python -m benchmarks.rejudge docs/results/h200/sensitivity-3-sessions.tgz
    python -m benchmarks.startup --rounds 10

Shared pieces (the built-in suite's arguments, a model cache for in-process sessions, the
launch probe, argument parsing) live in ``benchmarks._common``.
"""
