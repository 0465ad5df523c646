"""The gate on recorded GPU sessions: real drift from an H200, judged by the current rules.

The fixtures in tests/data/ are the published session tarballs condensed to what judging reads
(see benchmarks/rejudge.py), made from the repository root with

    python -m benchmarks.rejudge docs/results/h200/sensitivity-N-sessions.tgz \\
        --condense tests/data/rejudge-h200-sensitivity-N.json.gz

and judged the same as the tarballs (same table, row for row).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import rejudge

ROOT = Path(__file__).parents[1]
DATA = ROOT / "tests" / "data"


def _rejudge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.rejudge", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("name", "rows"), [
    # 8 baseline sessions; unchanged code and Speed ~42% slower (mlp:2), interleaved
    ("rejudge-h200-sensitivity-3.json.gz", ["| 0 | 0/20 | - |", "| mlp-2 | 20/20 |"]),
    # 5 baseline sessions; unchanged code and Speed 4-15% slower (mlp:0.25): 4/20 unchanged
    # sessions failed under the old per-comparison drift level, none under the family-wise one
    ("rejudge-h200-sensitivity-2.json.gz", ["| 0 | 0/20 | - |", "| mlp-0.25 | 1/20 |"]),
])
def test_recorded_gpu_sessions_never_fail_unchanged_code(name, rows):
    run = _rejudge(str(DATA / name))
    assert run.returncode == 0, run.stderr
    for row in rows:
        assert row in run.stdout, run.stdout


def test_condensed_sessions_read_back_as_written(tmp_path):
    stored, levels, rounds = rejudge.load(DATA / "rejudge-h200-sensitivity-2.json.gz")
    again = rejudge.load_condensed(rejudge.condense(stored, levels, rounds, "x"))
    assert again[0] == stored
    assert again[1] == levels
    assert again[2] == rounds == 5


def test_a_condensed_file_refuses_more_rounds_than_it_kept():
    run = _rejudge(str(DATA / "rejudge-h200-sensitivity-2.json.gz"), "--rounds", "6")
    assert run.returncode != 0
    assert "keeps the first 5 samples per case" in run.stderr
