"""Regenerates docs/report.md's bisect runs (docs/results/cpu/bisect/): scratch repositories of 16 commits.

Two scratch repositories of 16 commits each, built as tests/test_bisect.py builds them, with the
fake engine (``fake:m``) reading its behaviour from the ``fake_mlx_speed`` module of each
revision: in ``slowdown``, generations take 25% longer from the 12th commit on (the same work,
so timing decides); in ``work``, the engine does 2 more multiplications per decode step from the
12th commit on at the same speed (the work profiles decide, nothing is timed). Each run's
output goes to OUT/NAME.txt, with the command and its wall time. Run it from the repository
root, under the timing lock as it prints timings:

    flock /tmp/timing.lock python -m benchmarks.bisect_demo
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import parser

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "cpu" / "bisect"
DEMOS = {
    "slowdown": (lambda i: f"SLOWDOWN = {1.25 if i >= 11 else 1.0}\n", ["--pairs", "6:8"], {"FAKE_MLX_NOISE": "0.03"}),
    "work": (lambda i: 'EXTRA_WORK = "decode_step:Multiply=2"\n' if i >= 11 else "\n", [], {}),
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=demo", "-c", "user.email=demo@example.com",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def scratch_repository(path: Path, module: object) -> list[str]:
    """16 commits, ``fake_mlx_speed.py`` at commit i being ``module(i)``; their SHAs."""
    path.mkdir()
    git(path, "init", "-q")
    shas = []
    for i in range(16):
        (path / "fake_mlx_speed.py").write_text(module(i))  # type: ignore[operator]
        (path / "notes.txt").write_text(f"change {i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"change {i}")
        shas.append(git(path, "rev-parse", "HEAD"))
    return shas


def main() -> None:
    parser(__doc__).parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (module, extra, env) in DEMOS.items():
        with tempfile.TemporaryDirectory(prefix=f"bisect-demo-{name}-") as scratch:
            repo = Path(scratch) / "repo"
            shas = scratch_repository(repo, module)
            command = [sys.executable, "-m", "pytest_mlxvlm", "bisect", shas[0], "HEAD", "--model", "fake:m",
                       *extra, "--repo", str(repo)]
            start = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
            seconds = time.perf_counter() - start
        shown = " ".join(["pytest-mlxvlm", *command[3:-1], "REPO"])
        settings = " ".join(f"{k}={v}" for k, v in env.items())
        text = (f"$ {settings + ' ' if settings else ''}{shown}\n{run.stdout}{run.stderr}"
                f"# exit {run.returncode}, {seconds:.1f} s wall time (worker starts included)\n")
        (OUT / f"{name}.txt").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
