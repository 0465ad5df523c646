"""Which commit changed performance (asv's ``find``): a binary search over the commits from a
good revision to a bad one, each step comparing the good revision (the base) with the commit in
the middle (the head), each in a measuring worker started from its own git worktree.

Each step first compares the two sides' work profiles (one untimed generation each,
``gate/work.py``), exactly, through the ``WorkComparison`` hook (``compare_work`` by default).
Where the ends' work differs, the search looks for the commit that changed the work: a step whose
two sides both have a profile is decided by it, without timing (no noise, one generation a side).
Otherwise, and for a step where a side has no profile, a paired A/B run of the A/B mode
(``abmode.py``) decides: a commit is on the bad side when its comparison with the good revision has
the ends' verdict (regressed, improved, or a changed workload).

The ends are checked first: when the bad revision does not differ from the good one at these
settings there is nothing to look for. Otherwise each step halves the commits left, so N commits
take at most ceil(log2 N) steps after the ends. An A/B run that is inconclusive is run once more;
inconclusive again, the search stops there and names the commits the culprit is among.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..config.settings import ABPlan
from ..measure.workers import WorkerError, plugin_copy
from ..results import CaseComparison, GenerationRequest, Sample
from .abmode import ABModel, ABSetupError, Side, _git, _import_roots, judge_pairs, run_pairs
from .work import NOT_COMPARABLE, SAME, compare_profiles, describe

CHANGED = ("regressed", "improved", "workload-changed")
INCONCLUSIVE = "inconclusive"  # an A/B run that could neither call a change nor rule one out
BY_WORK = "work profile"
BY_TIMING = "timing"
UNAVAILABLE = "unavailable"  # a side recorded no work profile

# Whether two sides did different work: True (it differs), False (the same), None (no profile
# on a side, or two that cannot be compared: timing decides). Given each side's work profile data.
WorkComparison = Callable[[Mapping[str, Any] | None, Mapping[str, Any] | None], "bool | None"]


def compare_work(base: Mapping[str, Any] | None, head: Mapping[str, Any] | None) -> bool | None:
    """The exact comparison of two sides' work (primitives, evaluations and host syncs per
    phase, ``gate/work.py``): changed, the same, or None where it cannot tell."""
    if base is None or head is None:
        return None
    verdict = compare_profiles(base, head).verdict
    return None if verdict == NOT_COMPARABLE else verdict != SAME


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


@dataclass(frozen=True)
class WorkResult:
    """The two sides' work profiles compared: the hook's answer and what differs."""

    changed: bool | None  # differs, the same, or None (no profile on a side, or not comparable)
    verdict: str  # gate/work.py's verdict (same, added, removed, views, not comparable) or UNAVAILABLE
    what: str  # one line: "same work", "+2 Multiply per decode step", why a side has none
    seconds: float = 0.0  # the generations, and a new head's worktree and worker

    def line(self) -> str:
        """``"same work"``, ``"work added: +2 Multiply per decode step"``, ``"work not comparable:
        mlx 1 → 2"``, ``"no work profile (head: ...)"``."""
        if self.verdict == SAME:
            return "same work"
        if self.verdict == UNAVAILABLE:
            return self.what
        if self.verdict == NOT_COMPARABLE:
            return f"work {self.what}"
        return f"work {self.verdict}: {self.what}"


@dataclass(frozen=True)
class Timing:
    """A paired A/B run of the good revision against a commit."""

    comparison: CaseComparison
    pairs: int
    seconds: float


@dataclass
class Step:
    """One step of the search: the good revision against ``head``, decided by the work profiles
    (``timing`` None: not timed) or by an A/B run."""

    number: int  # 0: the two ends
    head: Commit
    work: WorkResult
    timing: Timing | None
    changed: bool
    decided_by: str  # BY_WORK or BY_TIMING
    left: int  # commits still suspect after this step

    @property
    def seconds(self) -> float:
        return self.work.seconds + (self.timing.seconds if self.timing else 0.0)


@dataclass
class BisectResult:
    good: Commit
    bad: Commit
    commits: list[Commit]  # after good up to bad, oldest first
    steps: list[Step] = field(default_factory=list)
    culprit: Commit | None = None
    verdict: str = ""  # the ends': regressed, improved, workload-changed, "work added" (...), or why none
    decided_by: str = BY_TIMING  # how the search tells the sides apart: BY_WORK where the ends' work differs
    undecided: Commit | None = None  # a commit whose A/B runs stayed inconclusive: the search stopped there
    suspects: list[Commit] = field(default_factory=list)  # then: the commits the culprit is among

    @property
    def search_steps(self) -> int:
        return sum(1 for s in self.steps if s.number > 0)


def expected_steps(commits: int) -> int:
    """The most steps after the ends' check: ceil(log2 N) for N suspect commits."""
    return math.ceil(math.log2(commits)) if commits > 1 else 0


def commits_between(repo: Path, good: str, bad: str) -> tuple[Commit, Commit, list[Commit]]:
    """The two revisions and the first-parent commits after ``good`` up to ``bad``; ABSetupError
    (one line) for a revision that is not there or a good one that is not an ancestor of bad."""
    def resolve(rev: str) -> Commit:
        try:
            sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except ABSetupError:
            raise ABSetupError(f"{rev}: no such revision in {repo}") from None
        return Commit(sha, _git(repo, "log", "-1", "--format=%s", sha))

    try:
        _git(repo, "rev-parse", "--show-toplevel")
    except (ABSetupError, OSError) as exc:
        raise ABSetupError(f"{repo} is not in a git repository ({exc})") from None
    first, last = resolve(good), resolve(bad)
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", first.sha, last.sha],
                      capture_output=True).returncode != 0:
        raise ABSetupError(f"{good} is not an ancestor of {bad}: give the older, good revision first")
    lines = _git(repo, "log", "--first-parent", "--ancestry-path", "--reverse", "--format=%H %s",
                 f"{first.sha}..{last.sha}").splitlines()
    commits = [Commit(*(line.split(" ", 1) + [""])[:2]) for line in lines if line.strip()]
    if not commits:
        raise ABSetupError(f"{good} and {bad} are the same commit: nothing to look for")
    return first, last, commits


class Comparer(Protocol):
    """What the search needs of a measuring set-up, for the good revision against a commit: the
    exact comparison of their work profiles, and a paired A/B run."""

    def work(self, good: Commit, head: Commit) -> WorkResult: ...

    def timing(self, good: Commit, head: Commit) -> Timing: ...


class Bisector:
    """The good revision's worker, kept loaded, against one head worktree after another."""

    def __init__(self, repo: Path, spec: str, request: GenerationRequest, plan: ABPlan, *,
                 tolerances: dict[str, float], alpha: float, warmup: int,
                 compare: WorkComparison = compare_work, python: str = sys.executable) -> None:
        self.repo = repo
        self.spec = spec
        self.request = request
        self.plan = plan
        self.tolerances = tolerances
        self.alpha = alpha
        self.warmup = warmup
        self.compare_work = compare
        self.python = python
        self.scratch = Path(tempfile.mkdtemp(prefix="pytest-mlxvlm-bisect-"))
        self.code = str(plugin_copy(self.scratch))
        self.trees: list[Path] = []
        self.model: ABModel | None = None
        self.head: Commit | None = None  # the commit self.model's head worker runs
        self.base: Side | None = None
        self.good_profile: tuple[dict[str, Any] | None, str] | None = None  # recorded once

    def _side(self, name: str, commit: Commit) -> Side:
        tree = self.scratch / f"{name}-{commit.short}"
        _git(self.repo, "worktree", "add", "--detach", str(tree), commit.sha)
        self.trees.append(tree)
        return Side(name, self.python, [self.code, *_import_roots(tree)], tree, f"{commit.short} {commit.subject}")

    def _remove(self, tree: Path) -> None:
        subprocess.run(["git", "-C", str(self.repo), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
        if tree in self.trees:
            self.trees.remove(tree)

    def _model(self, good: Commit, head: Commit) -> ABModel:
        """Both workers loaded: good's kept from step to step, a worktree and worker per head."""
        if self.model is not None and self.head == head:
            return self.model
        if self.base is None:
            self.base = self._side("base", good)
        head_side = self._side("head", head)
        model = ABModel(self.spec, self.base, head_side, self.plan, self.scratch)
        previous, self.model, self.head = self.model, model, head
        if previous is not None:  # keep the good revision's worker, loaded, from step to step
            model.workers["base"] = previous.workers.pop("base")
            model.info["base"] = previous.info["base"]
            model.load_times["base"] = previous.load_times["base"]
            model.decode_bytes["base"] = previous.decode_bytes["base"]
            previous.stop()
            if previous.head_side.cwd is not None:
                self._remove(previous.head_side.cwd)
        model.ensure_loaded()
        return model

    def work(self, good: Commit, head: Commit) -> WorkResult:
        """One untimed generation under the work recorder on each side (good's recorded once),
        compared by the hook."""
        start = time.perf_counter()  # a new head's worktree and worker included
        model = self._model(good, head)
        if self.good_profile is None:
            self.good_profile = self._profile(model, "base")
        (base, base_why), (current, head_why) = self.good_profile, self._profile(model, "head")
        changed = self.compare_work(base, current)
        if base is None or current is None:
            what = f"no work profile ({'; '.join(w for w in (base_why, head_why) if w)})"
            verdict = UNAVAILABLE
        else:
            diff = compare_profiles(base, current)
            verdict, what = diff.verdict, describe(diff)
        return WorkResult(changed, verdict, what, time.perf_counter() - start)

    def timing(self, good: Commit, head: Commit) -> Timing:
        """A paired A/B run, good against ``head``."""
        model = self._model(good, head)

        def judge(base: list[Sample], head_samples: list[Sample]) -> CaseComparison:
            return judge_pairs(head.short, base, head_samples, tolerances=self.tolerances,
                               alpha=self.alpha, method=self.plan.estimator)

        run = run_pairs(model.measure, self.request, warmup=self.warmup, plan=self.plan, judge=judge,
                        measure_both=model.measure_both_at_once(self.plan.order))
        return Timing(judge(run.base, run.head), len(run.head), run.seconds)

    def _profile(self, model: ABModel, side: str) -> tuple[dict[str, Any] | None, str]:
        """One untimed generation under the work recorder on ``side``: its profile data, or None
        and why where the side records none."""
        try:
            return model.work(side, self.request)[1], ""
        except WorkerError as exc:
            if "work profile unavailable" not in str(exc) and "unknown request" not in str(exc):
                raise
            return None, f"{side}: {exc}"

    def close(self) -> None:
        """Stop the workers, remove every worktree and the scratch folder."""
        if self.model is not None:
            self.model.stop()
        for tree in list(self.trees):
            self._remove(tree)
        subprocess.run(["git", "-C", str(self.repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _decided(comparer: Comparer, good: Commit, head: Commit) -> Timing:
    """An A/B run of ``head`` against ``good``, run once more when it is inconclusive (the second
    run's verdict; the pairs and seconds of both)."""
    timing = comparer.timing(good, head)
    if timing.comparison.status != INCONCLUSIVE:
        return timing
    again = comparer.timing(good, head)
    return Timing(again.comparison, timing.pairs + again.pairs, timing.seconds + again.seconds)


def bisect(comparer: Comparer, good: Commit, bad: Commit, commits: Sequence[Commit],
           report: Callable[[Step], None] = lambda step: None, *, use_work: bool = True) -> BisectResult:
    """Check the ends, then halve the suspect commits until one is left. Where the ends' work
    profiles differ (and ``use_work``), a step whose sides both have a profile is decided by them,
    without timing; every other step by a paired A/B run."""
    result = BisectResult(good, bad, list(commits))
    work = comparer.work(good, bad)
    if use_work and work.changed is True:
        result.decided_by, result.verdict = BY_WORK, f"work {work.verdict}"
        result.steps.append(Step(0, bad, work, None, True, BY_WORK, len(commits)))
    else:
        timing = _decided(comparer, good, bad)
        result.verdict = timing.comparison.status
        changed = result.verdict in CHANGED
        result.steps.append(Step(0, bad, work, timing, changed, BY_TIMING, len(commits) if changed else 0))
        if result.verdict == INCONCLUSIVE:
            result.undecided, result.suspects = bad, list(commits)
    report(result.steps[-1])
    if not result.steps[-1].changed:
        return result
    low, high = -1, len(commits) - 1  # low: like good (-1 is good itself); high: changed
    while high - low > 1:
        middle = (low + high) // 2
        work = comparer.work(good, commits[middle])
        if result.decided_by == BY_WORK and work.changed is not None:
            timed, moved, by = None, work.changed, BY_WORK
        else:  # a side without a profile, or a search by timing
            timed = _decided(comparer, good, commits[middle])
            status = timed.comparison.status
            moved = status in CHANGED if result.decided_by == BY_WORK else status == result.verdict
            by = BY_TIMING
            if status == INCONCLUSIVE:  # neither side of the search: stop, naming what is left
                result.steps.append(Step(len(result.steps), commits[middle], work, timed, False, by, high - low))
                result.undecided, result.suspects = commits[middle], list(commits[low + 1:high + 1])
                report(result.steps[-1])
                return result
        low, high = (low, middle) if moved else (middle, high)
        result.steps.append(Step(len(result.steps), commits[middle], work, timed, moved, by, high - low))
        report(result.steps[-1])
    result.culprit = commits[high]
    return result
