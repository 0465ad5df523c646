"""Paired A/B runs: the base (a git revision, another environment) and the head measured
side by side in two worker processes, pair by pair, until the answer is clear. A pair is two
rounds in ABBA order ("turns") or two generations at once ("duet": the host's drift, which
on a CUDA host flips decode between a fast and a slow mode from one second to the next, then
hits both sides alike, but two prefills of a large image collide; ``docs/benchmarks.md`` has
the figures; "staggered": at once, the second side asked when the first has its first token;
"barrier": both prefills in turn, each alone, then both decodes released together).
``docs/ab.md`` describes the orders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..common.leftovers import sweep, write_owner
from ..config.settings import ABPlan
from ..measure.isolation import reported_bytes, request_message, work_answer, work_message
from ..measure.workers import WorkerError, WorkerProcess, plugin_copy
from ..results import EXACT_METRICS, CaseComparison, GenerationRequest, Sample
from .paired import (
    INCONCLUSIVE_HALF_WIDTH,
    compare_paired,
    format_interval,
    inconclusive,
    more_pairs,
    settled,
)

MEMORY_HEADROOM = 1.2  # two copies must fit with this much to spare


class ABSetupError(ValueError):
    """A base that cannot be set up (no such revision, no such interpreter); one line."""


def _git(root: Path, *args: str) -> str:
    run = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise ABSetupError((run.stderr or run.stdout).strip().splitlines()[-1] if (run.stderr or run.stdout).strip()
                           else f"git {' '.join(args)} failed")
    return run.stdout.strip()


def _import_roots(root: Path) -> list[str]:
    """A checkout's import roots: its top folder, and ``src/`` in a src layout."""
    roots = [str(root)]
    if (root / "src").is_dir():
        roots.append(str(root / "src"))
    return roots


def resolve_python(value: str) -> str:
    """An interpreter path, or a virtual environment's folder; ABSetupError if neither."""
    path = Path(value).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
        raise ABSetupError(f"--mlx-ab-python {value}: a folder without bin/python (not a virtual environment)")
    if not path.exists() or not os.access(path, os.X_OK):
        raise ABSetupError(f"--mlx-ab-python {value}: no such interpreter")
    return str(path)


def base_revision(plan: ABPlan, rootdir: Path) -> tuple[Path, str] | None:
    """The repository and commit of ``--mlx-ab-base`` (None without one); ABSetupError, in one
    line, if the rootdir is in no git repository or the revision is not in it."""
    if not plan.base_rev:
        return None
    try:
        repo = Path(_git(rootdir, "rev-parse", "--show-toplevel"))
    except (ABSetupError, OSError) as exc:
        raise ABSetupError(f"--mlx-ab-base {plan.base_rev}: {rootdir} is not in a git repository "
                           f"({exc})") from None
    try:
        return repo, _git(repo, "rev-parse", "--verify", "--quiet", f"{plan.base_rev}^{{commit}}")
    except ABSetupError:
        raise ABSetupError(f"--mlx-ab-base {plan.base_rev}: no such revision in {repo} "
                           "(fetch it first, e.g. git fetch origin main)") from None


def validate(plan: ABPlan, rootdir: Path) -> None:
    """Check the base before anything runs: the revision exists, the interpreter is there."""
    if plan.base_python:
        resolve_python(plan.base_python)
    base_revision(plan, rootdir)


@dataclass
class Side:
    """One side of the comparison: how its worker is started, and what it is."""

    name: str
    python: str
    path: list[str]
    cwd: Path | None
    label: str


SCRATCH_PREFIX = "pytest-mlxvlm-ab-"  # the scratch folders, in the temporary folder


def _remove_worktree(folder: Path, owner: dict[str, Any] | None) -> None:
    """Before a dead session's scratch folder goes: its base worktree, out of its repository."""
    repo = (owner or {}).get("repo")
    worktree = folder / "base"
    if isinstance(repo, str) and Path(repo).is_dir():
        subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", str(worktree)],
                       capture_output=True)
        shutil.rmtree(worktree, ignore_errors=True)
        subprocess.run(["git", "-C", repo, "worktree", "prune"], capture_output=True)


def sweep_stale_scratch(parent: Path | None = None) -> list[Path]:
    """Remove what A/B sessions that were killed (SIGKILL, a lost machine) left: their scratch
    folders and base worktrees; returns the folders removed."""
    return sweep(Path(parent or tempfile.gettempdir()), f"{SCRATCH_PREFIX}*", remove=_remove_worktree)


class ABSession:
    """The sides of a session's A/B runs, their workers per model, and their clean-up."""

    def __init__(self, plan: ABPlan, rootdir: Path, log_dir: Path | None = None) -> None:
        self.plan = plan
        self.rootdir = rootdir
        self.log_dir = log_dir
        sweep_stale_scratch()
        self.scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        self.worktree: Path | None = None
        self.repo: Path | None = None
        self.models: dict[str, ABModel] = {}
        try:
            write_owner(self.scratch)
            self.base, self.head = self._sides()
        except BaseException:
            self.close()
            raise

    def _sides(self) -> tuple[Side, Side]:
        code = [str(plugin_copy(self.scratch))]
        head_roots: list[str] = []
        base_roots: list[str] = []
        base_label = head_label = ""
        revision = base_revision(self.plan, self.rootdir)
        if revision is not None:
            self.repo, sha = revision
            self.worktree = self.scratch / "base"
            write_owner(self.scratch, repo=str(self.repo))  # a killed session's worktree is found again
            _git(self.repo, "worktree", "add", "--detach", str(self.worktree), sha)
            base_roots = _import_roots(self.worktree)
            head_roots = _import_roots(self.repo)
            base_label = f"{self.plan.base_rev} ({sha[:10]})"
            head_sha = _git(self.repo, "rev-parse", "HEAD")[:10]
            dirty = _git(self.repo, "status", "--porcelain", "--untracked-files=no")
            head_label = f"working tree ({head_sha}{', modified' if dirty else ''})"
        base_python = resolve_python(self.plan.base_python) if self.plan.base_python else sys.executable
        if self.plan.base_python:
            base_label = (base_label + " with " if base_label else "") + base_python
            head_label = (head_label + " with " if head_label else "") + sys.executable
        base = Side("base", base_python, code + base_roots, self.worktree, base_label)
        head = Side("head", sys.executable, code + head_roots, self.repo, head_label)
        return base, head

    def model(self, spec: str) -> ABModel:
        """Both workers of a model, started and loaded (once per session)."""
        if spec not in self.models:
            self.models[spec] = ABModel(spec, self.base, self.head, self.plan, self.log_dir)
        return self.models[spec]

    def close(self) -> None:
        """Stop every worker and remove the worktree and scratch folder."""
        for model in self.models.values():
            model.stop()
        if self.worktree is not None and self.repo is not None:
            subprocess.run(["git", "-C", str(self.repo), "worktree", "remove", "--force", str(self.worktree)],
                           capture_output=True)
            subprocess.run(["git", "-C", str(self.repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class ABModel:
    """A model loaded in a base and a head worker."""

    spec: str
    base_side: Side
    head_side: Side
    plan: ABPlan
    log_dir: Path | None  # where the workers' logs go (the session's folder)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_times: dict[str, float] = field(default_factory=dict)
    # per side, what decode reads per token as its worker reported: (weights, KV per position)
    decode_bytes: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    workers: dict[str, WorkerProcess] = field(default_factory=dict)

    @property
    def load_time_s(self) -> float:
        """The head's load time (the model as this working tree loads it)."""
        return self.load_times.get("head", 0.0)

    def _worker(self, side: Side) -> WorkerProcess:
        if side.name not in self.workers:
            self.workers[side.name] = WorkerProcess(
                name=side.name, python=side.python, path=side.path, cwd=side.cwd,
                log_dir=self.log_dir, timeout_s=self.plan.timeout_s)
        return self.workers[side.name]

    def ensure_loaded(self) -> None:
        """Start and load whichever worker is not running (after a crash, again)."""
        for side in (self.base_side, self.head_side):
            worker = self._worker(side)
            if worker.alive and side.name in self.load_times:
                continue
            hello = worker.call({"op": "hello"}, timeout_s=120)
            if side.name == "head" and "base" in self.info:
                self._check_memory(hello)
            answer = worker.call({"op": "load", "spec": self.spec, "side": side.name})
            self.info[side.name] = {**hello, "model_bytes": answer.get("model_bytes") or 0}
            self.load_times[side.name] = float(answer.get("load_time_s", 0.0))
            self.decode_bytes[side.name] = reported_bytes(answer)

    def _check_memory(self, head_hello: dict[str, Any]) -> None:
        """Before the head loads: does a second copy fit beside the base's? Against free host
        memory measured now (the base already loaded), or a device's total for both copies."""
        weights = int(self.info["base"].get("model_bytes") or 0)  # all experts, not one token's
        limit = head_hello.get("available_memory")
        copies = 1 if head_hello.get("memory_is_free") else 2
        if weights and limit and copies * weights * MEMORY_HEADROOM > limit:
            room = f"{limit / 1e9:.1f} GB free beside the base's" if copies == 1 else f"{limit / 1e9:.1f} GB"
            raise WorkerError(
                f"two copies of {self.spec} ({weights / 1e9:.1f} GB each) do not fit beside each "
                f"other ({room}): the A/B mode keeps base and head loaded at once; "
                "use a smaller model, or gate against stored baselines instead"
            )

    def measure(self, side: str, request: GenerationRequest) -> Sample:
        return Sample.from_dict(self.workers[side].call(request_message(request))["sample"])

    def work(self, side: str, request: GenerationRequest) -> tuple[Sample, dict[str, Any]]:
        """One untimed generation under the work recorder on one side: (sample, profile data)."""
        return work_answer(self.workers[side].call(work_message(request)))

    def measure_both_at_once(
        self, order: str
    ) -> Callable[[Any, bool], tuple[Sample, Sample]] | None:
        """The pair measurement of an A/B order: None for turns (one side at a time)."""
        if order == "turns":
            return None
        return lambda request, base_first: self.measure_both(request, base_first, order)

    def measure_both(self, request: GenerationRequest | Mapping[str, GenerationRequest],
                     base_first: bool = True, order: str = "duet") -> tuple[Sample, Sample]:
        """Base and head generate at once, in ``order`` (``measure_at_once``), each its request
        (one for both, or one per side); the one asked first may get a head start, so the caller
        alternates."""
        requests = request if isinstance(request, Mapping) else {"base": request, "head": request}
        first, second = ("base", "head") if base_first else ("head", "base")
        answers = measure_at_once(self.workers, (first, second),
                                  {side: request_message(requests[side]) for side in (first, second)}, order)
        return Sample.from_dict(answers["base"]["sample"]), Sample.from_dict(answers["head"]["sample"])

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()


def measure_at_once(workers: Mapping[str, WorkerProcess], order: Sequence[str],
                    messages: Mapping[str, dict[str, Any]], mode: str) -> dict[str, dict[str, Any]]:
    """One generation of each worker named in ``order`` (its measure message in ``messages``),
    at once; returns each one's answer.

    ``duet``: all asked together. ``staggered``: each asked when the one before has its first
    token, so prefills never share the device. ``barrier``: each asked when the one before is
    held at its first token (every prefill runs alone, its TTFT measured alone), then all
    released together, so the decodes run side by side; the time held is left out of each
    sample. Every pending answer is read (the held ones released) before an error is raised,
    so no answer is left behind for the next request.
    """
    if mode not in ("duet", "staggered", "barrier"):
        raise ValueError(f"not an order of generations at once: {mode!r}")
    pending: list[str] = []
    answers: dict[str, dict[str, Any]] = {}
    error: WorkerError | None = None
    for k, name in enumerate(order):
        last = k == len(order) - 1
        message = messages[name]
        if mode == "duet" or (mode == "staggered" and last):
            workers[name].send(message)
            pending.append(name)
            continue
        workers[name].send({**message, "hold_at_first_token": True} if mode == "barrier"
                           else {**message, "first_token_event": True})
        try:
            event = workers[name].receive("measure (its first token)")
        except WorkerError as exc:  # it failed before its first token: nothing left pending
            error = exc
            break
        if event.get("event") == "first_token":
            pending.append(name)
        else:
            answers[name] = event
    if mode == "barrier":
        for name in pending:
            workers[name].send({"op": "release"})
    for name in pending:
        try:
            answers[name] = workers[name].receive("measure")
        except WorkerError as exc:
            error = error or exc
    if error is not None:
        raise error
    return answers


@dataclass
class PairedRun:
    """The rounds of one case: base and head samples in pairs, and why measuring stopped."""

    base: list[Sample]
    head: list[Sample]
    base_warmup: list[Sample]
    head_warmup: list[Sample]
    stopped: str  # "settled", "max pairs", "time budget"
    seconds: float


def run_pairs(measure: Callable[[str, GenerationRequest], Sample], request: GenerationRequest, *,
              warmup: int, plan: ABPlan, judge: Callable[[list[Sample], list[Sample]], CaseComparison],
              check_every: int = 5,
              measure_both: Callable[[GenerationRequest, bool], tuple[Sample, Sample]] | None = None,
              on_pair: Callable[[int, float], None] | None = None) -> PairedRun:
    """Warm both sides, then pairs (in ABBA order: base-head, head-base, ...; or both at once
    with ``measure_both``, asked in ABBA order) until the verdict is settled (checked every ``check_every`` pairs
    from ``min_pairs`` on), ``max_pairs``, or the time budget is spent. ``on_pair(pairs,
    seconds)`` hears of each measured pair (the progress line)."""
    start = time.perf_counter()

    def pair(i: int, into: dict[str, list[Sample]]) -> None:
        if measure_both is not None:
            base, head = measure_both(request, i % 4 in (0, 3))  # asked first: ABBA as well
            into["base"].append(base)
            into["head"].append(head)
            return
        for side in (("base", "head") if i % 2 == 0 else ("head", "base")):
            into[side].append(measure(side, request))

    warm: dict[str, list[Sample]] = {"base": [], "head": []}
    for i in range(warmup):
        pair(i, warm)
    rounds: dict[str, list[Sample]] = {"base": [], "head": []}
    stopped = "max pairs"
    for i in range(plan.max_pairs):
        pair(i, rounds)
        n = i + 1
        if on_pair is not None:
            on_pair(n, time.perf_counter() - start)
        if n < plan.min_pairs:
            continue
        if time.perf_counter() - start > plan.budget_s:
            stopped = "time budget"
            break
        if (n - plan.min_pairs) % check_every == 0 and n < plan.max_pairs:
            comparison = judge(rounds["base"], rounds["head"])
            if comparison.status == "workload-changed" or settled(comparison.metrics):
                stopped = "settled"
                break
    return PairedRun(rounds["base"], rounds["head"], warm["base"], warm["head"], stopped,
                     time.perf_counter() - start)


def judge_pairs(key: str, base: list[Sample], head: list[Sample], *, tolerances: dict[str, float],
                alpha: float, method: str = "fast",
                workload_changes: dict[str, tuple[Any, Any]] | None = None) -> CaseComparison:
    """Token counts first (a changed workload is its own verdict, as are ``workload_changes``:
    differences in what each side's code asked for), then each gated metric."""
    changed: dict[str, tuple[Any, Any]] = dict(workload_changes or {})
    for name in EXACT_METRICS:
        before = sorted({int(getattr(s, name)) for s in base})
        now = sorted({int(getattr(s, name)) for s in head})
        if before != now:
            changed[name] = (before[0] if len(before) == 1 else before, now[0] if len(now) == 1 else now)
    if changed:
        return CaseComparison(key, "workload-changed", workload_changes=changed,
                              note="the workload differs between base and head (" + ", ".join(changed)
                                   + "): the work itself changed, speed is not compared")
    metrics = [compare_paired(m, [float(getattr(s, m)) for s in base], [float(getattr(s, m)) for s in head],
                              tol, alpha, method) for m, tol in tolerances.items()]
    status = ("regressed" if any(m.verdict == "regressed" for m in metrics)
              else "inconclusive" if any(inconclusive(m) for m in metrics)
              else "improved" if any(m.verdict == "improved" for m in metrics) else "pass")
    if status != "inconclusive":
        return CaseComparison(key, status, metrics=metrics)
    undecided = [m for m in metrics if inconclusive(m)]
    wide = " and ".join(f"{format_interval(m)} reaches past its {m.tolerance * 100:g}% tolerance"
                        for m in undecided)
    settle = more_pairs(metrics)
    for m in undecided:
        m.verdict = "inconclusive"
    return CaseComparison(key, status, metrics=metrics, more_pairs=settle,
                          note=f"inconclusive: not a regression, but not ruled out: {wide}, an interval "
                               f"wider than ±{INCONCLUSIVE_HALF_WIDTH * 100:.0f}%")
