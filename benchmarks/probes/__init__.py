"""One-off probes whose findings are written down; kept to repeat them, not to regenerate a table.

- ``affinity``: does pinning the process to CPUs steady a launch-bound decode loop? (docs/benchmarks.md, "Where the spread comes from": no)
- ``drift``: where session-to-session drift comes from, around real pytest sessions (docs/benchmarks.md)
"""
