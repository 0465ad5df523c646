"""The paired A/B mode end to end: a git repository whose head changes the (fake) engine's
speed, measured side by side with its base in two real worker processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mlxvlm.config.settings import ABPlan
from pytest_mlxvlm.gate.abmode import ABSetupError, judge_pairs, measure_at_once, run_pairs, validate
from pytest_mlxvlm.measure.workers import WorkerError
from pytest_mlxvlm.results import GenerationRequest, Sample

AB = ["--mlx-model", "fake:m", "--mlx-resolutions", "224x224,448x448", "--mlx-ab-pairs", "6:10",
      "-p", "no:cacheprovider"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


def speed_module(**values) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    """A git repository whose committed base runs the fake engine at full speed."""
    root = pytester.path
    (root / "fake_mlx_speed.py").write_text(speed_module(SLOWDOWN=1.0))
    git(root, "init", "-q")
    git(root, "add", "fake_mlx_speed.py")
    git(root, "commit", "-qm", "base")
    return root


def head(repo: Path, **values) -> None:
    (repo / "fake_mlx_speed.py").write_text(speed_module(**values))


def workers_of(repo: Path, session_pid: int | None = None) -> list[int]:
    """Measuring workers running for this repository: the head's in it, the base's in a
    worktree under the A/B scratch folder (Linux: read from /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"pytest_mlxvlm.measure.worker" not in (proc / "cmdline").read_bytes():
                continue
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # ours: in this repository, or the base's worktree of a session run by this process
        # (another test run on the machine has A/B scratch folders too)
        if cwd.startswith(str(repo)) or ("pytest-mlxvlm-ab-" in cwd and parent == (session_pid or os.getpid())):
            found.append(int(proc.name))
    return found


def no_leftovers(repo: Path, session_pid: int | None = None) -> None:
    assert git(repo, "worktree", "list").count("\n") == 1, "the base worktree was not removed"
    if Path("/proc/self/cwd").exists():
        assert workers_of(repo, session_pid) == [], "a worker process outlived the session"


def samples(values, tokens=64):
    return [Sample(time_s=1, ttft_s=0.1, preprocess_s=0, prefill_s=0.1, prompt_tokens=90,
                   cached_tokens=0, image_tokens=tokens, generation_tokens=64, prompt_tps=900,
                   generation_tps=v, end_to_end_tps=v, peak_memory=1.0) for v in values]


def test_abba_order_and_stopping_once_settled():
    calls = []

    def measure(side, request):
        calls.append(side)
        return samples([100.0 if side == "base" else 80.0])[0]

    def judge(base, head):
        return judge_pairs("k", base, head, tolerances={"generation_tps": 0.03}, alpha=0.05)

    run = run_pairs(measure, GenerationRequest(None, "p", 1), warmup=1,
                    plan=ABPlan(base_rev="x", min_pairs=6, max_pairs=40), judge=judge)
    assert calls[:6] == ["base", "head", "base", "head", "head", "base"]  # warmup, then ABBA
    assert run.stopped == "settled" and len(run.base) == len(run.head) == 6


def test_duet_pairs_come_from_one_call_for_both_sides():
    calls = []

    def measure(side, request):
        raise AssertionError("a duet measures both sides at once")

    def both(request, base_first):
        calls.append(base_first)
        return samples([100.0])[0], samples([80.0])[0]

    def judge(base, head):
        return judge_pairs("k", base, head, tolerances={"generation_tps": 0.03}, alpha=0.05)

    run = run_pairs(measure, GenerationRequest(None, "p", 1), warmup=2, measure_both=both,
                    plan=ABPlan(base_rev="x", min_pairs=6, max_pairs=40), judge=judge)
    assert calls == [True, False] + [True, False, False, True, True, False]  # ABBA, who is asked first
    assert len(run.base_warmup) == 2
    assert run.stopped == "settled" and [s.generation_tps for s in run.head] == [80.0] * 6


class StubWorker:
    """A worker's send/receive as the pair orders use them, logging what happens when; with
    ``fail_before_first_token`` its generation fails before its first token."""

    def __init__(self, name, log, fail_before_first_token=False):
        self.name, self.log, self.fail = name, log, fail_before_first_token
        self.answers = []

    def send(self, message):
        op = message.get("op")
        kind = "hold" if message.get("hold_at_first_token") else "ask" if op == "measure" else op
        self.log.append(f"{self.name}:{kind}")
        if op == "release":
            return
        if self.fail:
            self.answers.append(WorkerError(f"{self.name} worker died during 'measure'"))
            return
        if message.get("hold_at_first_token") or message.get("first_token_event"):
            self.answers.append({"ok": True, "event": "first_token"})
        self.answers.append({"ok": True, "sample": {"side": self.name}})

    def receive(self, op, timeout_s=None):
        answer = self.answers.pop(0)
        self.log.append(f"{self.name}:{'event' if isinstance(answer, dict) and 'event' in answer else 'answer'}")
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize("mode, expected", [
    ("duet", ["b:ask", "h:ask", "b:answer", "h:answer"]),
    ("staggered", ["b:ask", "b:event", "h:ask", "b:answer", "h:answer"]),
    # each prefill alone (the other side held or not yet asked), then both released together
    ("barrier", ["b:hold", "b:event", "h:hold", "h:event", "b:release", "h:release", "b:answer", "h:answer"]),
])
def test_the_orders_of_a_pair_at_once(mode, expected):
    log = []
    workers = {"b": StubWorker("b", log), "h": StubWorker("h", log)}
    answers = measure_at_once(workers, ("b", "h"), {"b": {"op": "measure"}, "h": {"op": "measure"}}, mode)
    assert log == expected
    assert {k: v["sample"]["side"] for k, v in answers.items()} == {"b": "b", "h": "h"}


def test_a_barrier_pair_releases_the_held_side_when_the_other_fails():
    log = []
    workers = {"b": StubWorker("b", log), "h": StubWorker("h", log, fail_before_first_token=True)}
    with pytest.raises(WorkerError, match="h worker died"):
        measure_at_once(workers, ("b", "h"), {"b": {"op": "measure"}, "h": {"op": "measure"}}, "barrier")
    assert log == ["b:hold", "b:event", "h:hold", "h:answer", "b:release", "b:answer"]
    assert not workers["b"].answers  # nothing left behind for the next request


def test_stops_at_max_pairs_or_the_time_budget():
    def measure(side, request):
        time.sleep(0.01)
        return samples([100.0])[0]

    def judge(base, head):
        return judge_pairs("k", base, head, tolerances={"generation_tps": 0.0}, alpha=0.05)

    run = run_pairs(measure, GenerationRequest(None, "p", 1), warmup=0,
                    plan=ABPlan(base_rev="x", min_pairs=2, max_pairs=5), judge=judge)
    assert (run.stopped, len(run.head)) == ("max pairs", 5)
    run = run_pairs(measure, GenerationRequest(None, "p", 1), warmup=0,
                    plan=ABPlan(base_rev="x", min_pairs=2, max_pairs=500, budget_s=0.1), judge=judge)
    assert run.stopped == "time budget" and len(run.head) < 500


def test_each_pair_is_reported_for_the_progress_line():
    heard = []

    def measure(side, request):
        return samples([100.0])[0]

    def judge(base, head):
        return judge_pairs("k", base, head, tolerances={"generation_tps": 0.0}, alpha=0.05)

    run_pairs(measure, GenerationRequest(None, "p", 1), warmup=1, on_pair=lambda n, s: heard.append((n, s)),
              plan=ABPlan(base_rev="x", min_pairs=2, max_pairs=4), judge=judge)
    assert [n for n, _ in heard] == [1, 2, 3, 4] and all(s >= 0 for _, s in heard)


def test_pairs_too_few_to_ever_decide_are_a_usage_error(pytester, repo):
    """2 cases x 4 metrics at alpha 0.05: each is judged at 0.00625, which 5 pairs can never reach."""
    result = pytester.runpytest("--mlx-model", "fake:m", "--mlx-resolutions", "224x224,448x448",
                                "--mlx-ab-pairs", "2:5", "--mlx-ab-base", "HEAD", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-mlxvlm: --mlx-ab-pairs 2:5: with at most 5 pairs, even a head "
                                 "slower in every pair is not significant*use at least 8 pairs*"])
    no_leftovers(repo)


def test_token_counts_that_differ_are_a_changed_workload():
    c = judge_pairs("k", samples([100.0] * 3), samples([100.0] * 3, tokens=70),
                    tolerances={"generation_tps": 0.03}, alpha=0.05)
    assert c.status == "workload-changed" and c.workload_changes == {"image_tokens": (64, 70)}


def test_an_improvement_does_not_hide_an_inconclusive_metric():
    """TTFT clearly better, Decode too noisy to rule out a slowdown: the case is inconclusive
    (which ``--mlx-ab-inconclusive fail`` fails), not "improved"."""
    import numpy as np

    rng = np.random.default_rng(1)
    decode_base, decode_head = 50 * np.exp(rng.normal(0, 0.25, 20)), 50 * np.exp(rng.normal(0, 0.25, 20))

    def sides(ttft_head):
        base = [Sample(time_s=1, ttft_s=0.2, preprocess_s=0, prefill_s=0.2, prompt_tokens=90, cached_tokens=0,
                       image_tokens=64, generation_tokens=64, prompt_tps=450, generation_tps=float(g),
                       end_to_end_tps=50, peak_memory=1.0) for g in decode_base]
        head = [Sample(time_s=1, ttft_s=ttft_head, preprocess_s=0, prefill_s=ttft_head, prompt_tokens=90,
                       cached_tokens=0, image_tokens=64, generation_tokens=64, prompt_tps=450,
                       generation_tps=float(g), end_to_end_tps=50, peak_memory=1.0) for g in decode_head]
        return base, head

    tolerances = {"generation_tps": 0.03, "ttft_s": 0.05}
    for ttft_head in (0.2, 0.14):
        c = judge_pairs("k", *sides(ttft_head), tolerances=tolerances, alpha=0.05, method="median")
        assert c.status == "inconclusive", (ttft_head, c.status, c.note)
        assert {m.metric: m.verdict for m in c.metrics}["generation_tps"] == "inconclusive"


def test_validate_names_a_missing_revision_and_interpreter(repo, tmp_path):
    with pytest.raises(ABSetupError, match="no such revision"):
        validate(ABPlan(base_rev="origin/nope"), repo)
    with pytest.raises(ABSetupError, match="not in a git repository"):
        validate(ABPlan(base_rev="HEAD"), tmp_path)
    with pytest.raises(ABSetupError, match="no such interpreter"):
        validate(ABPlan(base_python=str(tmp_path / "python")), repo)


def test_a_slower_head_fails_with_the_change_and_its_interval(pytester, repo, monkeypatch):
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.03")
    head(repo, SLOWDOWN=1.12)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-json", "ab.json",
                                "--mlx-markdown", "ab.md", "--junitxml", "junit.xml")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm: A/B regressed in *test_image_generation[[]224x224[]] (fake:m on *): base HEAD (*), "
        "head working tree (*, modified)",
        "*Decode -1?.?% [[]-*%, -*%[]], p=*, * pairs (tolerance 3%)",
        "*mlxvlm A/B: fake:m, head against base, pair by pair*",
        "*2 compared, 2 regressed*",
    ])
    doc = json.loads((repo / "ab.json").read_text())
    sides = sorted((r["resolution"], r["side"]) for r in doc["results"])
    assert sides == [("224x224", "base"), ("224x224", "head"), ("448x448", "base"), ("448x448", "head")]
    heads = [r for r in doc["results"] if r["side"] == "head"]
    decode = next(m for m in heads[0]["comparison"]["metrics"] if m["metric"] == "generation_tps")
    assert decode["verdict"] == "regressed" and decode["interval"][0] < decode["change"] < decode["interval"][1]
    markdown = " ".join((repo / "ab.md").read_text().split())
    assert ("| Test | Metric | Base (median) | Head (median) | Change [interval] | Tolerance |" in markdown
            and "| test_image_generation[224x224] | Decode |" in markdown and "| 3% |" in markdown
            and "❌ regressed" in markdown)
    assert "mlxvlm:224x224:head:ab:generation_tps" in (repo / "junit.xml").read_text()
    no_leftovers(repo)


def test_unchanged_code_passes(pytester, repo, monkeypatch):
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.03")
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-history", "h.jsonl", "--mlx-bmf", "bmf.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 compared, 0 regressed*"])
    # side-by-side figures are not a nightly session's: the series' files are left as they were
    result.stdout.fnmatch_lines(["mlxvlm: history not written to *h.jsonl: an A/B session measures base and "
                                 "head side by side, not as a series' sessions are",
                                 "mlxvlm: Bencher file not written to *bmf.json: an A/B session *"])
    assert not (repo / "h.jsonl").exists() and not (repo / "bmf.json").exists()
    no_leftovers(repo)


def test_an_inconclusive_case_is_shown_everywhere_and_can_fail_the_job(pytester, repo, monkeypatch):
    # unchanged code on a very noisy machine, 7 pairs: intervals too wide to rule out anything
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.3")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(repo / "summary.md"))
    result = pytester.runpytest(*AB[:2], "--mlx-resolutions", "224x224", "--mlx-ab-pairs", "7:7",
                                "-p", "no:cacheprovider", "--mlx-ab-base", "HEAD", "--mlx-ab-inconclusive", "fail",
                                "--mlx-markdown", "ab.md", "--junitxml", "junit.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mlxvlm: A/B inconclusive in *test_image_generation[[]224x224[]] (fake:m on *)*",
        "  * settle it*(failed: --mlx-ab-inconclusive fail)",
        "*| test_image_generation[[]224x224[]] | * | inconclusive |",
        "*mlxvlm A/B (*): 1 compared, 0 regressed, 1 inconclusive*",
        "inconclusive: test_image_generation[[]224x224[]] (fake:m): not a regression, but not ruled out: *",
    ])
    markdown = (repo / "ab.md").read_text()
    assert "⚪ inconclusive" in markdown and "fails the job (--mlx-ab-inconclusive fail)" in markdown
    assert (repo / "summary.md").read_text() == markdown  # the step summary says the same
    junit = (repo / "junit.xml").read_text()
    assert 'name="mlxvlm:224x224:head:ab" value="inconclusive"' in junit
    assert 'name="mlxvlm:224x224:head:ab:inconclusive"' in junit
    no_leftovers(repo)


def test_a_base_whose_workload_differs_is_its_own_verdict(pytester, repo):
    head(repo, SLOWDOWN=1.0, IMAGE_TOKENS_EXTRA=5)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*A/B workload-changed in*", "*image_tokens: base 64, head 69*"])


def test_bad_base_is_a_usage_error(pytester, repo, tmp_path):
    result = pytester.runpytest(*AB, "--mlx-ab-base", "no-such-branch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlx-ab-base no-such-branch: no such revision in *"])
    result = pytester.runpytest(*AB, "--mlx-ab-python", str(tmp_path / "missing"))
    result.stderr.fnmatch_lines(["*--mlx-ab-python *missing: no such interpreter*"])
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-update-baselines")
    result.stderr.fnmatch_lines(["*--mlx-update-baselines cannot be used with the A/B mode*"])
    no_leftovers(repo)


def test_a_base_environment_without_mlx_is_named(pytester, repo, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    result = pytester.runpytest(*AB, f"--mlx-ab-python={tmp_path / 'bare'}")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*base worker: cannot import mlx (*) with *bare*python*"])
    no_leftovers(repo)


@pytest.mark.parametrize("order", ["turns", "duet", "staggered", "barrier"])
def test_a_crashing_worker_fails_its_case_only(pytester, repo, order):
    # warmup 1 + 10 pairs = 11 measurements per case: the head dies at its 15th, in the
    # second case; the third case gets a fresh worker and measures normally. In a duet the base
    # is generating too and its answer is read; in a staggered pair the other side is asked only
    # after the first one's first token, so when the head is asked first nothing is left pending
    head(repo, SLOWDOWN=1.0, CRASH_AT=15)
    result = pytester.runpytest(*AB[:2], "--mlx-resolutions", "224x224,336x336,448x448",
                                "--mlx-ab-pairs", "10:10", "-p", "no:cacheprovider",
                                "--mlx-ab-base", "HEAD", "--mlx-json", "ab.json", "--mlx-ab-order", order)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*336x336*head worker died during 'measure*' (*SIGABRT*)*"])
    assert len(json.loads((repo / "ab.json").read_text())["results"]) == 4
    no_leftovers(repo)


@pytest.mark.parametrize("order", ["duet", "staggered"])  # barrier: the crash test and the stub's
def test_a_pair_at_once_catches_the_slower_head_and_says_so(pytester, repo, monkeypatch, order):
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.03")
    head(repo, SLOWDOWN=1.12)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-ab-order", order)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*Decode -1?.?% [[]-*%, -*%[]], p=*, * pairs (tolerance 3%)",
                                 f"*pairs ({order}) in * s, stopped: *"])
    no_leftovers(repo)


def test_added_work_in_the_head_fails_with_the_diff_whatever_the_timing_says(pytester, repo):
    """Same speed on both sides, but the head's commit adds work: the work profile sees it."""
    head(repo, SLOWDOWN=1.0, EXTRA_WORK="decode_step:Multiply=60;prefill:Convolution=1", OUTPUT_CHANGE_AT=5)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-json", "ab.json", "--mlx-markdown", "ab.md")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm: work regressed in *224x224* at 224x224 (fake:m on *): +60 Multiply per decode step; "
        "+1 Convolution in prefill (base HEAD (*), head working tree (*))",
        "*mlxvlm work profile against the base (exact): 2 ADDED WORK",
        "*ADDED WORK: *: +60 Multiply per decode step; +1 Convolution in prefill; outputs differ from token 5",
    ])
    doc = json.loads((repo / "ab.json").read_text())
    heads = [r for r in doc["results"] if r["side"] == "head"]
    assert {r["comparison"]["status"] for r in heads} <= {"pass", "inconclusive", "improved"}  # timing: no change
    assert [r["work_check"]["verdict"] for r in heads] == ["added", "added"]
    assert all(r["work"]["hash"] for r in doc["results"])
    assert "❌ ADDED WORK" in (repo / "ab.md").read_text()
    no_leftovers(repo)


def test_unchanged_work_passes_in_ab(pytester, repo):
    head(repo, SLOWDOWN=1.0)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm work profile against the base (exact): 2 same work"])
    no_leftovers(repo)


def test_a_hanging_worker_is_stopped(pytester, repo):
    head(repo, SLOWDOWN=1.0, HANG_AT=3)
    # 5 s, not less: the timeout also bounds the fresh worker's imports and load on a loaded machine
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-worker-timeout", "5")
    result.assert_outcomes(failed=2)  # the restarted head worker hangs again at its third round
    result.stdout.fnmatch_lines(["*head worker did not answer 'measure*' within 5 s and was stopped*"])
    no_leftovers(repo)


def test_ctrl_c_stops_the_workers_and_removes_the_worktree(repo):
    head(repo, SLOWDOWN=1.0, HANG_AT=3)
    if not Path("/proc/self/cwd").exists():
        pytest.skip("finds the workers through /proc")
    # a shell that starts a job in the background makes it ignore SIGINT, and children inherit
    # that: give the session the default disposition, as a terminal's Ctrl-C would find it
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *AB, "--mlx-ab-base", "HEAD"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(workers_of(repo, proc.pid)) < 2:
            time.sleep(0.2)
        started = workers_of(repo, proc.pid)
        assert len(started) == 2, "base and head workers did not start"
        time.sleep(2)  # the head is hanging in its third measurement now
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=180)  # generous: a loaded CI machine is slow to wind down
        except subprocess.TimeoutExpired:
            for pid in workers_of(repo, proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"the session did not end within 180 s of Ctrl-C; its output:\n{out}")
    finally:
        if proc.poll() is None:  # a failed check above must not leave the hanging session behind
            for pid in workers_of(repo, proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    no_leftovers(repo, proc.pid)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()], "a worker outlived Ctrl-C"


def test_two_copies_that_do_not_fit_are_refused_before_the_head_loads(pytester, repo):
    (repo / "fake_mlx_speed.py").write_text(speed_module(SLOWDOWN=1.0, WEIGHT_BYTES=10**15))
    git(repo, "commit", "-qam", "a petabyte model")
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*two copies of fake:m (1000000.0 GB each) do not fit beside each other (*GB*): *"])
    no_leftovers(repo)


def test_each_side_is_bounded_by_what_its_worker_reported(pytester, repo):
    # the base's model reads twice the weights per token: half the head's bound
    (repo / "fake_mlx_speed.py").write_text(speed_module(WEIGHT_BYTES=2 * 10**8, KV_BYTES_PER_POSITION=1000))
    git(repo, "commit", "-qam", "a model of 200 MB")
    head(repo, WEIGHT_BYTES=10**8, KV_BYTES_PER_POSITION=1000)
    result = pytester.runpytest(*AB, "--mlx-ab-base", "HEAD", "--mlx-bandwidth", "20",
                                "--mlx-json", "ab.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*fake:m on *, base: *", "*| % of BW limit (tok/s) |",
                                 "*| 224x224 *| 100% of 100 *|",
                                 "*fake:m on *, head: *", "*| % of BW limit (tok/s) |",
                                 "*| 224x224 *| 50% of 200 *|"])
    doc = json.loads((repo / "ab.json").read_text())
    weights = {r["side"]: r["bandwidth"]["bytes_per_token"] - 1000 * (
        r["summary"]["prompt_tokens"]["median"] + r["summary"]["generation_tokens"]["median"] / 2)
        for r in doc["results"]}
    assert weights == {"base": 2 * 10**8, "head": 10**8}
    no_leftovers(repo)


def test_another_interpreter_as_the_base(pytester, repo):
    """--mlx-ab-python alone: the same code under another environment (here the same one)."""
    result = pytester.runpytest(*AB, f"--mlx-ab-python={sys.executable}", "--mlx-json", "ab.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*base: {sys.executable}*", "*2 compared, 0 regressed*"])
    assert {r["side"] for r in json.loads((repo / "ab.json").read_text())["results"]} == {"base", "head"}
    no_leftovers(repo)


@pytest.mark.slow
def test_real_model_side_by_side(pytester, repo):
    """The built-in suite on synthetic:tiny through base and head workers, in staggered pairs
    (a real generation's first-token event; turns go through the same measure path as
    --mlx-isolate's tests). Integration: tolerances no timing reaches, so that only a broken run
    fails (at 60% a staggered pair sharing 2 cores with another xdist worker once read Decode -60.1%)."""
    wide = [arg for m in ("end_to_end_tps", "generation_tps", "ttft_s", "peak_memory")
            for arg in ("--mlx-tolerance", f"{m}=400")]
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224",
                                "--mlx-max-tokens", "8", "--mlx-ab-pairs", "4:6", "--mlx-ab-base", "HEAD",
                                "-p", "no:cacheprovider", "--mlx-json", "ab.json", "--mlx-bandwidth", "100",
                                "--mlx-ab-order", "staggered", "--mlx-alpha", "0.2", *wide)
    # alpha 0.2 over 4 metrics: 6 pairs can reach each metric's level (0.05), so the gate can decide
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pairs (staggered) in * s*"])
    # the same code on both sides is never a regression; on a loaded 2-core host 6 pairs may not
    # settle it (CI saw Decode -35% [-64%, -29%] when another test ran on the other core): inconclusive
    decode = [line for line in result.outlines if line.startswith("| test_image_generation[224x224] | Decode ")]
    assert len(decode) == 1 and decode[0].rstrip(" |").rsplit("|", 1)[1].strip() in ("ok", "inconclusive"), decode
    result.stdout.fnmatch_lines(["*1 compared, 0 regressed*"])
    doc = json.loads((repo / "ab.json").read_text())
    assert sorted(r["side"] for r in doc["results"]) == ["base", "head"]
    assert all(r["bandwidth"]["limit_tps"] > 0 for r in doc["results"])  # reported by each worker
    assert all(len(r["samples"]) == r["workload"]["rounds"] >= 4 for r in doc["results"])
    no_leftovers(repo)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_a_killed_session_leaves_no_worker_and_the_next_one_removes_its_worktree(repo, session_killer):
    from pytest_mlxvlm.gate.abmode import sweep_stale_scratch

    head(repo, SLOWDOWN=1.0, HANG_AT=2)  # the head hangs in its second generation (the warmup pair's)
    workers = session_killer.kill([*AB, "--mlx-ab-base", "HEAD", "--noconftest"], repo, workers=2)
    scratch = {session_killer.cwd[pid] for pid in workers} - {repo}
    assert session_killer.survivors(workers, within_s=10.0) == [], "a worker outlived its SIGKILLed session by 10 s"
    (base,) = scratch  # the base worker ran in the worktree, in the dead session's scratch folder
    assert base.name == "base" and git(repo, "worktree", "list").count("\n") == 2  # SIGKILL: left behind
    assert sweep_stale_scratch(base.parent.parent) == [base.parent]  # what the next A/B session does first
    assert not base.parent.exists()
    no_leftovers(repo)
