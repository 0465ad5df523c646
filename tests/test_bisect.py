"""``pytest-mlxvlm bisect``: the search on its own (a comparer that knows the answer), then end to
end on a scratch repository of 16 commits whose fake engine slows down at one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from pytest_mlxvlm.gate.bisect import (
    BY_TIMING,
    BY_WORK,
    UNAVAILABLE,
    Commit,
    Timing,
    WorkResult,
    bisect,
    commits_between,
    compare_work,
    expected_steps,
)
from pytest_mlxvlm.gate.abmode import ABSetupError
from pytest_mlxvlm.results import CaseComparison


class Known:
    """A comparer whose commits from ``culprit`` on changed: their timing regressed, or (with
    ``work``) their work differs while timing says pass; ``profiled`` says which commits have
    a work profile (None: every one). It counts what it was asked."""

    def __init__(self, commits: list[Commit], culprit: int | None, work: bool = False,
                 profiled: set[int] | None = None) -> None:
        self.order = {c.sha: i for i, c in enumerate(commits)}
        self.culprit = culprit
        self.by_work = work
        self.profiled = profiled
        self.asked: list[str] = []
        self.timed: list[str] = []

    def moved(self, head: Commit) -> bool:
        return self.culprit is not None and self.order[head.sha] >= self.culprit

    def work(self, good: Commit, head: Commit) -> WorkResult:
        self.asked.append(head.sha)
        if self.profiled is not None and self.order[head.sha] not in self.profiled:
            return WorkResult(None, UNAVAILABLE, "no work profile (head: not recorded)")
        differs = self.by_work and self.moved(head)
        return WorkResult(differs, "added" if differs else "same", "+2 Multiply per decode step" if differs else "")

    def timing(self, good: Commit, head: Commit) -> Timing:
        self.timed.append(head.sha)
        slower = self.moved(head) and not self.by_work
        return Timing(CaseComparison(head.sha, "regressed" if slower else "pass"), 6, 0.1)


def chain(n: int) -> list[Commit]:
    return [Commit(f"{i:040x}", f"commit {i}") for i in range(1, n + 1)]


GOOD = Commit("0" * 40, "good")


@pytest.mark.parametrize("culprit", [0, 1, 7, 10, 14])
def test_the_culprit_in_log2_steps_after_the_ends(culprit):
    commits = chain(15)  # 16 commits with the good one
    known = Known(commits, culprit)
    result = bisect(known, GOOD, commits[-1], commits)
    assert result.culprit == commits[culprit] and result.verdict == "regressed"
    assert 3 <= result.search_steps <= expected_steps(15) == 4  # ceil(log2 15) at most
    assert known.asked[0] == known.timed[0] == commits[-1].sha  # the ends first
    assert known.timed == known.asked  # the same work everywhere: every step timed
    assert {s.decided_by for s in result.steps} == {BY_TIMING} and result.decided_by == BY_TIMING
    assert [s.left for s in result.steps][-1] == 1


def test_ends_that_do_not_differ_end_the_search():
    commits = chain(15)
    result = bisect(Known(commits, None), GOOD, commits[-1], commits)
    assert result.culprit is None and len(result.steps) == 1 and result.verdict == "pass"


class Noisy(Known):
    """As ``Known``, but the A/B runs of ``noisy`` commits are inconclusive ``times`` times."""

    def __init__(self, commits: list[Commit], culprit: int, noisy: int, times: int) -> None:
        super().__init__(commits, culprit)
        self.noisy, self.left = commits[noisy].sha, times

    def timing(self, good: Commit, head: Commit) -> Timing:
        if head.sha == self.noisy and self.left:
            self.left -= 1
            self.timed.append(head.sha)
            return Timing(CaseComparison(head.sha, "inconclusive"), 40, 0.1)
        return super().timing(good, head)


def test_an_inconclusive_step_is_run_again_and_never_counted_as_unchanged():
    """The culprit is commit index 2; the middle commit (index 6, changed) is inconclusive once: it is
    measured again and the search goes on. Inconclusive twice, the search stops and names what is left."""
    commits = chain(15)
    once = Noisy(commits, culprit=2, noisy=6, times=1)
    result = bisect(once, GOOD, commits[-1], commits)
    assert result.culprit == commits[2] and result.undecided is None
    assert once.timed.count(commits[6].sha) == 2
    rerun = next(s for s in result.steps if s.head == commits[6])
    assert rerun.timing is not None and rerun.timing.pairs == 40 + 6  # both runs' pairs
    twice = bisect(Noisy(commits, culprit=2, noisy=6, times=2), GOOD, commits[-1], commits)
    assert twice.culprit is None and twice.undecided == commits[6]
    assert twice.suspects == commits  # nothing was decided before the first step
    ends = bisect(Noisy(commits, culprit=2, noisy=14, times=2), GOOD, commits[-1], commits)
    assert ends.undecided == commits[-1] and ends.verdict == "inconclusive" and ends.suspects == commits


@pytest.mark.parametrize("culprit", [0, 5, 14])
def test_a_work_change_decides_every_step_without_timing(culprit):
    """Timing says pass everywhere; the work comparison (the hook) finds the commit exactly,
    and nothing is timed."""
    commits = chain(15)
    known = Known(commits, culprit, work=True)
    result = bisect(known, GOOD, commits[-1], commits)
    assert result.culprit == commits[culprit] and result.verdict == "work added"
    assert result.decided_by == BY_WORK and {s.decided_by for s in result.steps} == {BY_WORK}
    assert known.timed == [] and all(s.timing is None for s in result.steps)
    assert result.search_steps <= 4


def test_a_step_without_a_work_profile_is_timed():
    """The ends' work differs, but one commit in the middle records none: that step is
    decided by an A/B run (changed when its timing changed), the others by their work."""
    commits = chain(15)
    known = Known(commits, 5, work=True, profiled=set(range(15)) - {6})  # the first middle
    known_timing_moves = Known(commits, 5)  # the slowdown came with the work
    known.timing = known_timing_moves.timing  # type: ignore[method-assign]
    result = bisect(known, GOOD, commits[-1], commits)
    assert result.culprit == commits[5]
    timed = [s for s in result.steps if s.timing is not None]
    assert [s.head for s in timed] == [commits[6]] and timed[0].decided_by == BY_TIMING and timed[0].changed
    assert timed[0].work.changed is None


def test_timing_only_ignores_the_work_profiles():
    commits = chain(15)
    known = Known(commits, 5, work=True)
    result = bisect(known, GOOD, commits[-1], commits, use_work=False)
    assert result.culprit is None and result.verdict == "pass"  # timing saw no change
    assert result.steps[0].work.changed is True  # still compared and shown


def test_the_work_comparison_is_exact():
    """Two fake generations' profiles: the same work, added work, or none recorded."""
    from pytest_mlxvlm.measure.fake import fake_profile
    from pytest_mlxvlm.results import Sample

    sample = Sample(time_s=1, ttft_s=0.1, preprocess_s=0, prefill_s=0.1, prompt_tokens=90, cached_tokens=0,
                    image_tokens=64, generation_tokens=8, prompt_tps=900, generation_tps=100,
                    end_to_end_tps=8, peak_memory=1.0)
    base = fake_profile("fake:m", sample)
    assert compare_work(base, fake_profile("fake:m", sample)) is False
    assert compare_work(base, fake_profile("fake:m", sample, "decode_step:Multiply=2")) is True
    assert compare_work(base, fake_profile("fake:m", sample, version="0.1-fake")) is None  # not comparable
    assert compare_work(base, None) is None


def test_the_step_lines():
    from pytest_mlxvlm.cli.bisect import describe
    from pytest_mlxvlm.gate.bisect import Step

    head = Commit("ab" * 20, "change 11")
    by_work = Step(2, head, WorkResult(True, "added", "+2 Multiply per decode step", 0.4), None, True, BY_WORK, 4)
    assert describe(by_work, 4) == ("step 2/4: ababababab change 11: work added: +2 Multiply per decode step "
                                    "(by work profile, not timed; 0 s) -> changed; 4 commit(s) left")
    timed = Step(0, head, WorkResult(False, "same", "same work", 0.2),
                 Timing(CaseComparison(head.sha, "pass"), 8, 3.0), False, BY_TIMING, 0)
    assert describe(timed, 4) == ("step ends: ababababab change 11: pass (8 pairs, 3 s; same work; by timing) "
                                  "-> unchanged; 0 commit(s) left")
    undecided = Step(1, head, WorkResult(False, "same", "same work", 0.2),
                     Timing(CaseComparison(head.sha, "inconclusive"), 80, 6.0), False, BY_TIMING, 8)
    assert describe(undecided, 4).endswith("inconclusive (80 pairs, 6 s; same work; by timing) "
                                           "-> neither side: inconclusive; 8 commit(s) left")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, module: Callable[[int], str], commits: int = 16) -> list[str]:
    """A repository whose ``fake_mlx_speed`` module at commit i is ``module(i)``."""
    path.mkdir()
    git(path, "init", "-q")
    shas = []
    for i in range(commits):
        (path / "fake_mlx_speed.py").write_text(module(i))
        (path / "notes.txt").write_text(f"change {i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"change {i}")
        shas.append(git(path, "rev-parse", "HEAD"))
    return shas


@pytest.fixture
def scratch_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """16 commits; from the 12th on, the fake engine's generations take 25% longer."""
    repo = tmp_path / "repo"
    return repo, make_repo(repo, lambda i: f"SLOWDOWN = {1.25 if i >= 11 else 1.0}\n")


def test_commits_between_checks_its_revisions(scratch_repo, tmp_path):
    repo, shas = scratch_repo
    good, bad, commits = commits_between(repo, shas[0], "HEAD")
    assert (good.sha, bad.sha, [c.sha for c in commits]) == (shas[0], shas[-1], shas[1:])
    with pytest.raises(ABSetupError, match="not an ancestor"):
        commits_between(repo, shas[-1], shas[0])
    with pytest.raises(ABSetupError, match="no such revision"):
        commits_between(repo, "v9.9", "HEAD")
    with pytest.raises(ABSetupError, match="not in a git repository"):
        commits_between(tmp_path, "HEAD", "HEAD")


def test_bisect_finds_the_injected_slowdown(scratch_repo):
    """The command in its own process, real workers from worktrees: the ends, then 4 steps."""
    repo, shas = scratch_repo
    env = {**_scratch_env(repo), "FAKE_MLX_NOISE": "0.03"}
    # 10:12 pairs: at 6:8 the default (median) estimator read the unchanged change 7 as Decode
    # -3.1% [-5.7%, -0.8%] on the fake's seeded 3% noise, just past Decode's 3% tolerance
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "bisect", shas[0], "HEAD", "--model", "fake:m",
                          "--pairs", "10:12", "--repo", str(repo)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("bisect: 15 commit(s) after") and "then 4 step(s)" in lines[0]
    steps = [line for line in lines if line.startswith("step ")]
    assert steps[0].startswith(f"step ends: {shas[-1][:10]} change 15: regressed (Speed -")
    assert all("; same work; by timing) -> " in line for line in steps)  # a slowdown, not more work
    assert [line.split(":")[0] for line in steps[1:]] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert lines[-1] == (f"culprit: {shas[11]} change 11 (regressed against {shas[0][:10]}; 4 step(s) after "
                         "the ends, by timing)")
    assert git(repo, "worktree", "list").count("\n") == 0, "a worktree was left behind"
    if Path("/proc/self/cwd").exists():
        assert _workers(repo) == [], "a worker outlived the command"


def test_bisect_finds_injected_work_without_timing(tmp_path):
    """From the 4th of 5 commits on, the fake engine does 2 more multiplications per decode step
    at the same speed: the work profiles find the commit exactly, and no pair is measured (5
    commits, not 16, as each step's cost is a worker's start)."""
    repo = tmp_path / "repo"
    shas = make_repo(repo, lambda i: 'EXTRA_WORK = "decode_step:Multiply=2"\n' if i >= 3 else "\n", commits=5)
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "bisect", shas[0], "HEAD", "--model", "fake:m",
                          "--repo", str(repo)], capture_output=True, text=True, timeout=300,
                         env=_scratch_env(repo))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("bisect: 4 commit(s) after") and "then 2 step(s)" in lines[0]
    steps = [line.split(": ", 2) for line in lines if line.startswith("step ")]
    assert [(where, head[11:]) for where, head, _ in steps] == [("step ends", "change 4"), ("step 1/2", "change 2"),
                                                                 ("step 2/2", "change 3")]
    assert [what.split(" (by work profile, not timed; ")[0] for _, _, what in steps] == [
        "work added: +2 Multiply per decode step", "same work", "work added: +2 Multiply per decode step"]
    assert [what.split(") -> ")[1] for _, _, what in steps] == [
        "changed; 4 commit(s) left", "unchanged; 2 commit(s) left", "changed; 1 commit(s) left"]
    assert lines[-1] == (f"culprit: {shas[3]} change 3 (work added against {shas[0][:10]}; 2 step(s) after "
                         "the ends, by work profile)")
    assert git(repo, "worktree", "list").count("\n") == 0 and _workers(repo) == []


def _scratch_env(repo: Path) -> dict[str, str]:
    """The environment of a bisect run whose worktrees go into a folder of this test's own (its
    TMPDIR), so that its workers are told apart from those of tests running beside it (xdist)."""
    scratch = repo.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch)}


def _is_worker_in(proc: Path, repo: Path) -> bool:
    try:
        cwd = os.readlink(proc / "cwd")
        return (b"pytest_mlxvlm.measure.worker" in (proc / "cmdline").read_bytes()
                and cwd.startswith(os.path.realpath(repo.parent / "scratch") + os.sep) and "pytest-mlxvlm-bisect-" in cwd)
    except OSError:
        return False


def test_bad_input_is_one_line(scratch_repo, capsys):
    from pytest_mlxvlm.cli.main import main

    repo, shas = scratch_repo
    assert main(["bisect", shas[-1], shas[0], "--model", "fake:m", "--repo", str(repo)]) == 2
    assert "is not an ancestor of" in capsys.readouterr().err
    assert main(["bisect", shas[0], "HEAD", "--model", "fake:m", "--repo", str(repo), "--resolution", "big"]) == 2
    assert "bad resolution 'big'" in capsys.readouterr().err


def test_ctrl_c_stops_the_workers_and_removes_the_worktrees(tmp_path):
    """SIGINT while a head worker hangs: exit 130, no worker and no worktree left."""
    import signal
    import time

    if not Path("/proc/self/cwd").exists():
        pytest.skip("finds the workers through /proc")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for i, module in enumerate(["SLOWDOWN = 1.0\n", "SLOWDOWN = 1.0\nHANG_AT = 3\n"]):
        (repo / "fake_mlx_speed.py").write_text(module)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"change {i}")
    good = git(repo, "rev-parse", "HEAD~1")
    proc = subprocess.Popen([sys.executable, "-m", "pytest_mlxvlm", "bisect", good, "HEAD", "--model", "fake:m",
                             "--repo", str(repo)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_scratch_env(repo),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_workers(repo)) < 2:
            time.sleep(0.2)
        assert len(_workers(repo)) == 2, "the base and head workers did not start"
        time.sleep(1)  # the head hangs in its third measurement
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "bisect: interrupted" in out, out
    assert _workers(repo) == [] and git(repo, "worktree", "list").count("\n") == 0


def _workers(repo: Path) -> list[Path]:
    return [p for p in Path("/proc").glob("[0-9]*") if _is_worker_in(p, repo)]
