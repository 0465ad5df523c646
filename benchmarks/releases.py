"""docs/releases.md, the campaigns: each mlx / mlx-vlm release measured as if it were a commit.

The release history of mlx and mlx-vlm, measured by the plugin as if each release were a
nightly commit (issue 17).

For each release pair of a campaign: one virtual environment (PyPI, exact pins, the plugin from
the checkout without its dependencies, ``pip freeze`` kept), then in release order the built-in
image suite (``--quick``) and the cache suite, their JSON reports and sessions, then ONE history
over the releases, the nightly report over it (``pytest-mlxvlm report``), and every change point
between two neighbouring releases checked by the paired A/B mode (``--mlx-ab-python``) between
exactly those two environments. Every finished (env, step) leaves a marker in the output folder,
so a rerun skips it and the campaign resumes from committed files::

    python -m benchmarks.releases --campaign vlm            # mlx 0.32.4, mlx-vlm 0.7.0..0.7.10
    python -m benchmarks.releases --campaign mlx            # mlx 0.31.0..0.32.4, one mlx-vlm
    python -m benchmarks.releases --campaign vlm --steps report,ab

Timing steps run under ``flock /tmp/timing.lock`` (one env-run at a time); installs need none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Sequence

from pytest_mlxvlm.common.files import atomic_write_text, write_json

from .release_envs import env_python, install, one_line_reason, plugin_rev, run_logged

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("PYTEST_MLXVLM_CACHE", Path.home() / ".cache" / "pytest-mlxvlm")) / "releases"
OUT = ROOT / "docs" / "results" / "cpu" / "releases"
MODEL = "synthetic:tiny"
STEPS = ("install", "images", "cache", "report", "ab")
MEASURE_STEPS = ("images", "cache")
# mlx-vlm 0.7.7 was never published on PyPI (pip index versions mlx-vlm).
VLM_RELEASES = ("0.7.0", "0.7.1", "0.7.2", "0.7.3", "0.7.4", "0.7.5", "0.7.6", "0.7.8", "0.7.9", "0.7.10")
MLX_RELEASES = ("0.31.0", "0.31.1", "0.31.2", "0.32.0", "0.32.1", "0.32.2", "0.32.3", "0.32.4")
MLX_CAMPAIGN_VLM = "0.7.0"  # declares mlx>=0.32.2: older mlx is installed over it (forced)


def version_key(version: str) -> tuple[int, ...]:
    """A release's sort key: 0.7.10 after 0.7.9."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(f"bad release version {version!r}: write digits and dots, e.g. 0.7.3")
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Pair:
    """One release pair: an mlx and an mlx-vlm, and whether mlx is forced below what mlx-vlm declares."""

    mlx: str
    mlxvlm: str
    forced: bool = False

    @property
    def key(self) -> str:
        """The env's folder name."""
        return f"{self.mlx}-{self.mlxvlm}"

    def label(self, varying: str) -> str:
        """The "commit" of this release in the history: the varying version first."""
        return f"{self.mlxvlm}+mlx{self.mlx}" if varying == "mlxvlm" else f"{self.mlx}+vlm{self.mlxvlm}"

    def title(self) -> str:
        """How a line of the report names this pair."""
        return f"mlx-vlm {self.mlxvlm} (mlx {self.mlx}{', forced' if self.forced else ''})"


def campaign_pairs(name: str) -> tuple[list[Pair], str]:
    """The pairs of a campaign in release order, and which library varies."""
    if name == "vlm":
        return release_order([Pair("0.32.4", v) for v in VLM_RELEASES], "mlxvlm"), "mlxvlm"
    if name == "mlx":
        declared = version_key("0.32.2")
        return release_order([Pair(m, MLX_CAMPAIGN_VLM, version_key(m) < declared) for m in MLX_RELEASES],
                             "mlx"), "mlx"
    raise ValueError(f"unknown campaign {name!r}: vlm or mlx")


def release_order(pairs: Iterable[Pair], varying: str) -> list[Pair]:
    """Pairs sorted by the varying library's release, then the other's."""
    def key(p: Pair) -> tuple[tuple[int, ...], tuple[int, ...]]:
        mine, other = (p.mlxvlm, p.mlx) if varying == "mlxvlm" else (p.mlx, p.mlxvlm)
        return version_key(mine), version_key(other)
    return sorted(pairs, key=key)


# --- markers ---------------------------------------------------------------------------------

def marker_path(out: Path, pair: Pair, step: str) -> Path:
    """Where a finished (env, step) leaves its marker."""
    return out / "envs" / pair.key / f"{step}.done.json"


def read_marker(out: Path, pair: Pair, step: str) -> dict[str, Any] | None:
    """The marker of a finished step, None when the step has not finished (or its marker is
    corrupt: reported, left in place, and the step runs again)."""
    path = marker_path(out, pair, step)
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
        if not isinstance(marker, dict) or "status" not in marker:
            raise ValueError("no status")
        return marker
    except (OSError, ValueError) as exc:
        print(f"releases: corrupt marker {path} ({exc}); running {step} again", file=sys.stderr)
        return None


def write_marker(out: Path, pair: Pair, step: str, status: str, **fields: Any) -> dict[str, Any]:
    """Mark (env, step) finished: status measured, skipped or failed, with its one-line reason."""
    marker = {"status": status, "pair": pair.key, "step": step,
              "finished": datetime.now().isoformat(timespec="seconds"), **fields}
    write_json(marker_path(out, pair, step), marker)
    return marker


# --- one-line reports ----------------------------------------------------------------------

def skip_line(pair: Pair, step: str, reason: str) -> str:
    """The report's one line for a step a release could not run."""
    return f"{pair.title()}: {step}: {reason}; skipped"


# --- measuring steps -------------------------------------------------------------------------

def suite_command(py: Path, step: str, files: Path, rounds: int, max_tokens: int) -> list[str]:
    """The pytest command of a measuring step, as a nightly job would run it."""
    return [str(py), "-m", "pytest", "-p", "no:cacheprovider", "-q", "--mlx-model", MODEL,
            "--mlx-suite", step, "--quick", "--mlx-rounds", str(rounds), "--mlx-max-tokens", str(max_tokens),
            "--mlx-json=" + str(files / f"{step}.json"), "--mlx-history=" + str(files / f"session-{step}.jsonl"),
            "--mlx-missing-baseline", "skip", "--mlx-baseline-dir=" + str(files / "no-baselines")]


def step_env(work: Path, pair: Pair, label: str) -> dict[str, str]:
    """The environment of a step: the release's label as the commit, its own model cache, no hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(GITHUB_SHA=label, GITHUB_REF_NAME="releases", HF_HUB_OFFLINE="1",
               PYTEST_MLXVLM_CACHE=str(work / pair.key / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return env


def measure(work: Path, out: Path, pair: Pair, step: str, label: str, rounds: int,
            max_tokens: int, lock: str | None, tree: str) -> dict[str, Any]:
    """Run one measuring step in the pair's environment (under the timing lock) and mark it."""
    files = out / "envs" / pair.key
    files.mkdir(parents=True, exist_ok=True)
    for stale in (files / f"{step}.json", files / f"session-{step}.jsonl"):
        stale.unlink(missing_ok=True)
    command = suite_command(env_python(work, pair), step, files, rounds, max_tokens)
    if lock:
        command = ["flock", lock, *command]
    scratch = Path(tempfile.mkdtemp(prefix="releases-run-"))
    try:
        started = time.monotonic()
        code, output = run_logged(command, files / f"{step}.log", env=step_env(work, pair, label), cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = round(time.monotonic() - started, 1)
    if has_measurements(files / f"{step}.json"):
        return write_marker(out, pair, step, "measured", exit_code=code, seconds=elapsed, plugin_tree=tree,
                            reason="" if code == 0 else one_line_reason(output))
    reason = one_line_reason(output)
    print(skip_line(pair, step, reason))
    return write_marker(out, pair, step, "skipped", exit_code=code, seconds=elapsed, reason=reason,
                        plugin_tree=tree)


def has_measurements(report: Path) -> bool:
    """Whether a step's JSON report holds measurements: a case that ran, or a cache step."""
    try:
        document = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    return (any(r.get("outcome") != "error" and r.get("samples") for r in document.get("results", []))
            or any(rec.get("steps") for rec in document.get("cache", [])))


def _results(report: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(report.read_text()).get("results", []))
    except (OSError, ValueError):
        return []


# --- the history, its report, the A/B checks ---------------------------------------------------

def build_history(out: Path, pairs: Sequence[Pair], varying: str) -> Path:
    """ONE history over the releases in release order: each session as its env wrote it, its date
    made the release's nightly (day i of the campaign), the date it ran kept as ``measured``."""
    lines: list[str] = []
    start: datetime | None = None
    for day, pair in enumerate(pairs):
        for step in MEASURE_STEPS:
            session = out / "envs" / pair.key / f"session-{step}.jsonl"
            if not session.exists():
                continue
            for raw in session.read_text().splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:
                    print(f"releases: corrupt line in {session} skipped", file=sys.stderr)
                    continue
                measured = record.get("date", "")
                start = start or datetime.fromisoformat(measured)
                record["measured"] = measured
                record["date"] = (start + timedelta(days=day, minutes=MEASURE_STEPS.index(step))
                                  ).isoformat(timespec="seconds")
                record["commit"] = pair.label(varying)
                lines.append(json.dumps(record, sort_keys=True))
    history = out / "history.jsonl"
    atomic_write_text(history, "".join(line + "\n" for line in lines))
    return history


def change_points(history: Path) -> list[dict[str, Any]]:
    """Every change point the nightly report finds, with the two releases around it."""
    from pytest_mlxvlm.config.tolerances import DEFAULT_TOLERANCES
    from pytest_mlxvlm.reports import history as store
    from pytest_mlxvlm.reports.trends import build_series, detect

    found = []
    for series in build_series(store.read(history).records, ("end_to_end_tps", "generation_tps", "ttft_s")):
        detect(series, DEFAULT_TOLERANCES.get(series.metric, 0.10))
        for cp in series.change_points:
            found.append({"case": series.case, "metric": series.metric, "before": cp.commits[0],
                          "after": cp.commits[1], "change": cp.change, "p_value": cp.p_value,
                          "regression": cp.regression, "level_before": cp.before, "level_after": cp.after})
    return found


def resolution_of(case: str) -> str | None:
    """The WxH of an image case key, None for other cases."""
    match = re.search(r"\[(\d+x\d+)\]$", case)
    return match.group(1) if match else None


def ab_check(work: Path, out: Path, pairs: Sequence[Pair], varying: str, cp: dict[str, Any],
             max_tokens: int, lock: str | None, ab_args: Sequence[str] = ()) -> dict[str, Any]:
    """The paired A/B run between exactly the two releases around a change point (resumable)."""
    by_label = {p.label(varying): p for p in pairs}
    base, head = by_label[cp["before"]], by_label[cp["after"]]
    resolution = resolution_of(cp["case"])
    name = f"{base.key}__{head.key}__{resolution}"
    folder = out / "ab"
    done = folder / f"{name}.done.json"
    if done.exists():
        return json.loads(done.read_text())
    if resolution is None:
        return {"name": name, "status": "skipped", "reason": f"{cp['case']}: the A/B mode measures image cases"}
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(env_python(work, head)), "-m", "pytest", "-p", "no:cacheprovider", "-q",
               "--mlx-model", MODEL, "--mlx-suite", "images", "--mlx-resolutions", resolution,
               "--mlx-max-tokens", str(max_tokens), "--mlx-ab-python=" + str(work / base.key / "venv"),
               "--mlx-json=" + str(folder / f"{name}.json"), *ab_args]
    if lock:
        command = ["flock", lock, *command]
    scratch = Path(tempfile.mkdtemp(prefix="releases-ab-"))
    try:
        code, output = run_logged(command, folder / f"{name}.txt", env=step_env(work, head, head.label(varying)),
                                  cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    verdict = {"name": name, "base": base.key, "head": head.key, "resolution": resolution,
               "exit_code": code, "metrics": ab_metrics(folder / f"{name}.json")}
    verdict["status"] = "measured" if verdict["metrics"] else "skipped"
    if not verdict["metrics"]:
        verdict["reason"] = one_line_reason(output)
    write_json(done, verdict)
    return verdict


def ab_metrics(report: Path) -> dict[str, Any]:
    """Each gated metric's A/B change, interval and verdict from the head's results."""
    metrics: dict[str, Any] = {}
    for result in _results(report):
        comparison = result.get("comparison") or {}
        if result.get("side") != "head" or not comparison:
            continue
        for m in comparison.get("metrics", []):
            metrics[m.get("metric", "?")] = {k: m.get(k) for k in ("change", "interval", "verdict", "p_value",
                                                                  "tolerance", "pairs", "method")}
        metrics["_case"] = {"verdict": comparison.get("verdict"), "detectable": comparison.get("detectable")}
    return metrics


def report_step(out: Path, pairs: Sequence[Pair], varying: str) -> list[dict[str, Any]]:
    """The history, the nightly report over it (the checkout's CLI), and the change points."""
    history = build_history(out, pairs, varying)
    code, _ = run_logged([sys.executable, "-m", "pytest_mlxvlm", "report", str(history), "--out",
                          str(out / "report")], out / "report.log", timeout_s=600)
    points = change_points(history)
    write_json(out / "changepoints.json", {"report_exit_code": code, "change_points": points})
    return points


# --- the campaign ------------------------------------------------------------------------------

def campaign_plugin(out: Path, requested: str | None) -> tuple[str, str]:
    """The plugin revision a campaign measures with: as requested, else the one it started with
    (campaign.json), else HEAD; (commit, tree)."""
    recorded = out / "campaign.json"
    if requested is None and recorded.exists():
        requested = json.loads(recorded.read_text()).get("plugin_commit")
    return plugin_rev(requested or "HEAD")


def is_current(marker: dict[str, Any] | None, tree: str) -> bool:
    """A finished step measured with the campaign's plugin (a marker of another plugin is stale)."""
    return marker is not None and marker.get("plugin_tree", tree) == tree


def run_campaign(name: str, work: Path, out: Path, steps: Sequence[str], rounds: int, max_tokens: int,
                 lock: str | None, plugin: str | None = None, ab_args: Sequence[str] = ()) -> list[str]:
    """Every step of a campaign that has no current marker yet; returns the one-line skip reports."""
    pairs, varying = campaign_pairs(name)
    out.mkdir(parents=True, exist_ok=True)
    commit, tree = campaign_plugin(out, plugin)
    write_json(out / "campaign.json", {"campaign": name, "varying": varying, "model": MODEL,
                                       "rounds": rounds, "max_tokens": max_tokens, "sizes": "--quick",
                                       "plugin_commit": commit, "plugin_tree": tree,
                                       "pairs": [p.__dict__ for p in pairs]})
    skipped: list[str] = []
    for pair in pairs:
        todo = [s for s in MEASURE_STEPS if s in steps and not is_current(read_marker(out, pair, s), tree)]
        if ("install" in steps and not is_current(read_marker(out, pair, "install"), tree)) or todo:
            try:
                state = install(work, out, pair, commit, tree)
                write_marker(out, pair, "install", "done", plugin_commit=commit, plugin_tree=tree,
                             pip_check=state["pip_check"])
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                write_marker(out, pair, "install", "skipped", reason=str(exc)[:300], plugin_tree=tree)
        installed = read_marker(out, pair, "install")
        for step in todo:
            if installed is None or installed["status"] != "done":
                print(skip_line(pair, step, "no environment (see its install step)"))
                continue
            marker = measure(work, out, pair, step, pair.label(varying), rounds, max_tokens, lock, tree)
            print(f"{pair.title()}: {step}: {marker['status']} in {marker['seconds']} s", flush=True)
    for pair in pairs:
        for step in MEASURE_STEPS:  # a step that measured, marked skipped (an older script): measured
            marker = read_marker(out, pair, step)
            if marker and marker["status"] == "skipped" and has_measurements(out / "envs" / pair.key / f"{step}.json"):
                write_marker(out, pair, step, "measured", **{k: v for k, v in marker.items() if k not in ("status", "pair", "step", "finished")})
        for step in ("install", *MEASURE_STEPS):
            marker = read_marker(out, pair, step)
            if marker and marker["status"] not in ("done", "measured"):
                skipped.append(skip_line(pair, step, marker.get("reason", "")))
    if "report" in steps or "ab" in steps:
        points = report_step(out, pairs, varying)
        if "ab" in steps:
            seen: set[tuple[str, str, str | None]] = set()
            for cp in points:
                key = (cp["before"], cp["after"], resolution_of(cp["case"]))
                if key in seen:
                    continue
                seen.add(key)
                verdict = ab_check(work, out, pairs, varying, cp, max_tokens, lock, ab_args)
                print(f"A/B {verdict['name']}: {verdict['status']}", flush=True)
    atomic_write_text(out / "skipped.txt", "".join(line + "\n" for line in skipped))
    return skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the campaign, the folders, the steps, the workload."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", choices=("vlm", "mlx"), default="vlm")
    parser.add_argument("--work", type=Path, default=WORK, help=f"environments (default {WORK})")
    parser.add_argument("--out", type=Path, default=None, help=f"results (default {OUT}/<campaign>)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--plugin", default=None,
                        help="plugin revision to measure with (default: the campaign's, else HEAD)")
    parser.add_argument("--ab-pairs", default="20:40", help="--mlx-ab-pairs of the A/B checks")
    parser.add_argument("--ab-budget", default="480", help="--mlx-ab-budget of the A/B checks (seconds a case)")
    parser.add_argument("--lock", default="/tmp/timing.lock", help="flock file for timing runs ('' for none)")
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {', '.join(unknown)}: choose from {', '.join(STEPS)}")
    out = args.out or OUT / args.campaign
    for line in run_campaign(args.campaign, args.work, out, steps, args.rounds, args.max_tokens, args.lock or None,
                             args.plugin, ["--mlx-ab-pairs", args.ab_pairs, "--mlx-ab-budget", args.ab_budget]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
