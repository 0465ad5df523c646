"""Every derived output under docs/results/ and tests/data/, rebuilt from the raw data (or --check).

Regenerate the outputs derived from published raw data, or check that they are up to date.

- ``docs/results/history*/``: the dashboard (``index.html``, a page and PNGs per case,
  ``report.csv``, ``report.md``) from each folder's ``history.jsonl`` (``pytest-mlxvlm report``;
  the raw demo runs are ``benchmarks/history_demo.sh``'s).
- ``tests/data/rejudge-*.json.gz``: the sensitivity session tarballs in ``docs/results/``
  condensed to what ``benchmarks.rejudge`` judges (the fixtures of tests/test_benchmarks.py).

Both are deterministic: the same raw data gives the same bytes. ``--check`` writes nothing and
exits 1 when a committed output differs from what the raw data gives now.

    python -m benchmarks.regenerate
    python -m benchmarks.regenerate --check
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from . import rejudge
from ._common import parser

ROOT = Path(__file__).resolve().parents[1]
# fixture (under the data folder) -> its tarball (under the results folder)
FIXTURES = {
    "rejudge-h200-sensitivity-2.json.gz": "h200/sensitivity-2-sessions.tgz",
    "rejudge-h200-sensitivity-3.json.gz": "h200/sensitivity-3-sessions.tgz",
}
REPORT_FILES = ("report.md", "report.html", "report.csv", "index.html", "plot-*.png", "*/*/*.html", "*/*/*.png")


def history_report(history: Path) -> dict[str, bytes]:
    """The site ``pytest-mlxvlm report`` makes from a history, by path relative to its folder."""
    with tempfile.TemporaryDirectory(prefix="mlxvlm-regenerate-") as tmp:
        run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "report", history.name,
                              "--out", tmp], capture_output=True, text=True,
                             cwd=history.parent)  # the source the index names: history.jsonl
        if run.returncode not in (0, 1):  # 1: a regression found, as in the demos
            raise SystemExit(f"pytest-mlxvlm report {history} failed:\n{run.stderr}")
        return {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}


def fixture(tarball: Path, relative_to: Path) -> bytes:
    """A tarball condensed as ``python -m benchmarks.rejudge TARBALL --condense X.json.gz``."""
    stored, levels, _ = rejudge.load(tarball)
    source = tarball.resolve().relative_to(relative_to).as_posix()
    return rejudge.dump_condensed(rejudge.condense(stored, levels, 5, source), gz=True)


def outputs(results: Path, data: Path) -> tuple[dict[Path, bytes], list[Path]]:
    """Every derived file with its content, and the stale ones (generated, no longer made)."""
    made: dict[Path, bytes] = {}
    stale: list[Path] = []
    for history in sorted(results.glob("history*/history.jsonl")):
        files = {history.parent / name: content for name, content in history_report(history).items()}
        made.update(files)
        stale += [p for pattern in REPORT_FILES for p in history.parent.glob(pattern)
                  if p not in files]
    for name, tarball in FIXTURES.items():
        made[data / name] = fixture(results / tarball, ROOT)
    return made, stale


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    cli.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    cli.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    args = cli.parse_args()
    made, stale = outputs(args.results, args.data)
    changed = [p for p, content in made.items() if not p.exists() or p.read_bytes() != content]
    for path in changed:
        print(f"{'differs' if path.exists() else 'missing'}: {path.relative_to(ROOT)}")
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)}")
    if args.check:
        print(f"{len(made)} outputs checked: {len(changed) + len(stale)} out of date")
        raise SystemExit(1 if changed or stale else 0)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(made[path])
    for path in stale:
        path.unlink()
    print(f"{len(made)} outputs regenerated: {len(changed)} written, {len(stale)} removed")


if __name__ == "__main__":
    main()
