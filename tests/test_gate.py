"""The baseline gate: the confirm-by-measuring-again logic (unit), and pytester sessions on
the fake engine (2% noise) for every verdict. Storage itself is tested in test_baselines.py."""

import json
from pathlib import Path

import pytest

from pytest_mlxvlm.common import machine
from pytest_mlxvlm.gate import decision as gate
from pytest_mlxvlm.gate.baselines import BaselineCase
from pytest_mlxvlm.results import CaseResult, Sample

pytestmark = pytest.mark.usefixtures("noisy_engine")

CHIP = "test-chip"
FILE = Path("baselines") / CHIP / "fake-a.json"
# Baselines recorded here are seconds old: gate with them anyway (the rule that a baseline needs
# sessions at different times is tested on its own below).
RUN = ["--mlx-model", "fake:a", "--mlx-chip", CHIP, "--mlx-rounds", "5", "-p", "no:benchmark",
       "--mlx-strict-baselines"]
TWO = ["--mlx-resolutions", "224x224,448x448"]


def _baseline(fake: pytest.Pytester, *extra: str) -> pytest.RunResult:
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines", *extra)
    result.assert_outcomes(passed=2)
    return result


def test_real_slowdown_fails_each_case_with_an_actionable_message(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    monkeypatch.setenv("FAKE_MLX_SEED", "2")
    result = fake.runpytest(*RUN, *TWO, "--mlx-json", "out.json")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm: regression in pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]] "
        "(fake:a on test-chip) (confirmed by measuring again):",
        "*Speed (end_to_end_tps): baseline * tok/s, now * tok/s, -2?.?% (tolerance 10%), "
        "Mann-Whitney p=* (n=10 vs 5)",
        "*baseline file: *baselines/test-chip/fake-a.json",
        "*if this is expected, update the baseline: pytest --mlx-model fake:a * "
        "--mlx-update-baselines -k fake:a-224x224",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*2 compared, 2 regressed, 0 new, 0 unused*"])
    doc = json.loads((fake.path / "out.json").read_text())
    case = doc["results"][0]
    assert len(case["samples"]) == 10  # measured again once to confirm
    cmp = case["comparison"]
    assert cmp["status"] == "regressed" and cmp["confirmed"] is True
    speed = next(m for m in cmp["metrics"] if m["metric"] == "end_to_end_tps")
    assert speed["verdict"] == "regressed" and speed["p_value"] < 0.05


def test_too_few_samples_are_undecidable_not_a_pass(fake, monkeypatch):
    """3 rounds against a one-session baseline of 3 can never reach p < 0.05: a gating baseline
    fails the case saying so (and what would do), a weak one warns; 4 rounds decide."""
    run = [*RUN, "--mlx-rounds", "3", "--mlx-resolutions", "224x224"]
    fake.runpytest(*run, "--mlx-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    result = fake.runpytest(*run)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mlxvlm: the gate cannot decide *test_image_generation[[]224x224[]] (fake:a, baseline *fake-a.json): "
        "Speed, Decode, TTFT, Peak memory: 3 rounds against 3 baseline samples cannot reach p < 0.05 "
        "(at best 0.05), so no change of any size could fail this case; measure at least 4 rounds "
        "(--mlx-rounds 4) or add baseline sessions (--mlx-update-baselines=add)",
        "*1 compared, 0 regressed, 0 new, 0 unused, 1 undecidable*",
    ], consecutive=False)
    weak = fake.runpytest(*[a for a in run if a != "--mlx-strict-baselines"])
    weak.assert_outcomes(passed=1)
    weak.stdout.fnmatch_lines(["*MlxGatePowerWarning: mlxvlm: the gate cannot decide *224x224*"])
    fake.runpytest(*run, "--mlx-rounds", "4").assert_outcomes(failed=1)  # decidable: the slowdown fails


def test_slowdown_within_tolerance_passes(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.04")
    fake.runpytest(*RUN, *TWO).assert_outcomes(passed=2)


def test_tolerances_from_command_line_ini_and_marker(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    wide = ["end_to_end_tps=40", "generation_tps=40", "prompt_tps=40", "ttft_s=40"]
    args = [a for t in wide for a in ("--mlx-tolerance", t)]
    fake.runpytest(*RUN, *TWO, *args).assert_outcomes(passed=2)
    ini = fake.makeini("[pytest]\nmlx_tolerance =\n    " + "\n    ".join(wide))
    fake.runpytest(*RUN, *TWO).assert_outcomes(passed=2)
    ini.unlink()
    fake.makepyfile(test_marked="""
        import pytest
        @pytest.mark.mlx_benchmark(tolerance={"end_to_end_tps": 40, "generation_tps": 40,
                                              "prompt_tps": 40, "ttft_s": 40})
        def test_image_generation(mlx_bench):
            mlx_bench.run()
    """)
    # the user's test has its own cases: create them, then slow down
    monkeypatch.delenv("FAKE_MLX_SLOWDOWN")
    own = ["test_marked.py", *RUN, *TWO, "--mlx-suite", "off"]
    fake.runpytest(*own, "--mlx-update-baselines=new").assert_outcomes(passed=2)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    fake.runpytest(*own).assert_outcomes(passed=2)
    fake.runpytest(*own, "--mlx-no-confirm").assert_outcomes(passed=2)


def test_improvement_passes_and_can_flag_a_stale_baseline(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "0.7")
    result = fake.runpytest(*RUN, *TWO, "--mlx-stale-threshold", "20")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("MlxStaleBaselineWarning:") == 2  # one per stale case
    result.stdout.fnmatch_lines([
        "*MlxStaleBaselineWarning: *[[]224x224[]] improved beyond 20%: Speed +4?.?%, *stale*",
        "*2 compared, 0 regressed, 0 new, 0 unused, 2 improved*",
    ], consecutive=False)


@pytest.mark.parametrize("policy, outcome, line", [
    ("warn", {"passed": 2}, "*0 compared, 0 regressed, 2 new, 0 unused*"),
    ("fail", {"failed": 2}, "*no baseline for pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]]"
                            " in *fake-a.json; create it with --mlx-update-baselines=new"),
    ("skip", {"skipped": 2}, "*SKIPPED*no baseline for*"),
])
def test_missing_baseline_policy(fake, policy, outcome, line):
    result = fake.runpytest(*RUN, *TWO, "--mlx-missing-baseline", policy, "-rs")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([line])
    assert not (fake.path / FILE).exists()


def test_unused_baselines_are_listed(fake):
    _baseline(fake)
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*1 compared, 0 regressed, 0 new, 1 unused*",
        "unused baseline: pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]448x448[]] (fake:a, *)",
    ])
    # a session narrowed by -k (or -m, --lf, test ids) left the other cases out: not "unused"
    narrowed = fake.runpytest(*RUN, "-k", "224")
    narrowed.assert_outcomes(passed=1)
    narrowed.stdout.fnmatch_lines(["*1 compared, 0 regressed, 0 new, 0 unused*",
                                   "*fake:a: 1 stored case(s) not measured in this session, which ran only some "
                                   "tests (-k): not listed as unused*"])
    assert "unused baseline:" not in narrowed.stdout.str()


def test_baselines_of_several_sessions_allow_for_drift(fake, monkeypatch):
    for seed, slowdown in enumerate(("1.0", "1.25", "0.9", "1.15")):  # a machine that drifts
        monkeypatch.setenv("FAKE_MLX_SEED", str(seed))
        monkeypatch.setenv("FAKE_MLX_SLOWDOWN", slowdown)
        mode = "--mlx-update-baselines" + ("=add" if seed else "")
        fake.runpytest(*RUN, *TWO, mode).assert_outcomes(passed=2)
    doc = json.loads((fake.path / FILE).read_text())
    case = doc["cases"]["pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"]
    assert case["sessions"] == 4
    assert [len(g) for g in case["metrics"]["end_to_end_tps"]["samples"]] == [5, 5, 5, 5]
    assert len(case["recorded"]) == 4 and case["recorded"][0].endswith("+00:00")
    # 20% slower than the baseline's middle is within the drift these sessions showed ...
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.25")
    result = fake.runpytest(*RUN, *TWO, "--mlx-json", "o.json")
    result.assert_outcomes(passed=2)
    speed = next(m for m in json.loads((fake.path / "o.json").read_text())["results"][0]
                 ["comparison"]["metrics"] if m["metric"] == "end_to_end_tps")
    assert speed["sessions"] == 4 and speed["allowed"] > 0.2
    # the allowance is a family-wise share: 0.05 over 2 measured tests x 4 gated metrics
    assert speed["drift_alpha"] == pytest.approx(0.05 / 8)
    # all four sessions ran within a minute: the gate says the allowance saw only that
    result.stdout.fnmatch_lines(["*fake:a: the 4 baseline sessions in *fake-a.json were recorded "
                                 "within 1 min*--mlx-update-baselines=add*"])
    # ... four times as slow is not (four sessions that drift this much, judged at the
    # session's family-wise level 0.05 / (2 tests x 4 metrics), allow about 60%)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "4.0")
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*drift over 4 baseline sessions allows *% at level 0.0063*"])


def test_changed_token_counts_are_a_changed_workload(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_IMAGE_TOKENS_EXTRA", "5")
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*the workload of pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]] changed*"
        "speed was not compared:",
        "*prompt_tokens: baseline 90, now 95",
        "*image_tokens: baseline 64, now 69",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*0 compared, 0 regressed, 0 new, 0 unused, 2 workload changed*"])


def test_other_workload_settings_are_not_compared(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "2")
    result = fake.runpytest(*RUN, *TWO, "--mlx-max-tokens", "32", "--mlx-markdown", "pr.md")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*0 compared, 0 regressed, 0 new, 0 unused, 2 not comparable*"])
    assert "not comparable: max_tokens: 64 → 32" in (fake.path / "pr.md").read_text()


def test_library_version_change_is_shown(fake, monkeypatch):
    _baseline(fake)
    path = fake.path / FILE
    doc = json.loads(path.read_text())
    now = {case["libraries"]["mlx"] for case in doc["cases"].values()}
    assert now == {machine.detect()["mlx"]}  # this machine's version, whatever it is
    for case in doc["cases"].values():
        case["libraries"]["mlx"] = "0.0.1"
    path.write_text(json.dumps(doc))
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.5")
    result = fake.runpytest(*RUN, *TWO)
    result.stdout.fnmatch_lines([f"*library versions changed since the baseline: mlx 0.0.1 -> {now.pop()}*"])


def test_markdown_report_for_pull_requests(fake, monkeypatch):
    _baseline(fake)
    summary = fake.path / "step-summary.md"
    summary.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    fake.runpytest(*RUN, *TWO, "--mlx-markdown", "pr.md", "--mlx-no-confirm")
    text = (fake.path / "pr.md").read_text()
    assert text.startswith("## pytest-mlxvlm on `test-chip`")
    assert "**2 compared, 2 regressed, 0 new, 0 unused**" in text
    assert "| Case | Metric | Baseline | Now | Change | Verdict |" in text
    assert "| `pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]` | Speed |" in text
    assert "❌ regressed (p=" in text
    assert summary.read_text() == "previous step\n" + text


def test_reference_baseline_compares_speed_with_its_own_tolerance(fake):
    path = fake.path / FILE.with_suffix(".reference.json")
    path.parent.mkdir(parents=True)
    key = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"
    doc = {"schema_version": 1, "kind": "reference", "model": "fake:a", "chip": CHIP,
           "reference": {"tolerance": 0.3, "method": "one run"},
           "cases": {key: {"test": "test_image_generation", "resolution": "224x224",
                           "metrics": {"end_to_end_tps": {"median": 200, "samples": [200]}}}}}
    path.write_text(json.dumps(doc))
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(failed=1)  # the fake runs at about 88.8 tok/s: -56% beyond 30%
    result.stdout.fnmatch_lines(["*Speed (end_to_end_tps): baseline 200.00 tok/s, now 8?.?? tok/s, -5?.?% "
                                 "(tolerance 30%), reference figure (n=1), tolerance only"])
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224", "--mlx-update-baselines")
    result.stdout.fnmatch_lines(["*1 baseline case(s) written to *fake-a.json"])
    assert json.loads(path.read_text()) == doc  # the reference is never touched
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(passed=1)  # measured baselines take precedence over references



# -- gate.check: a regression is measured again, and kept only if the second measurement agrees --

BASE = [100.0, 102.0, 98.0, 101.0, 99.0]
TTFT = [0.100, 0.102, 0.098, 0.101, 0.099]
TOLERANCES = {"end_to_end_tps": 0.10, "ttft_s": 0.15}


def _samples(speed: float = 1.0, ttft: float = 1.0) -> list[Sample]:
    """Five samples: Speed and TTFT scaled by the given factors (1.0: as the baseline)."""
    return [Sample(time_s=64 / (v * speed), ttft_s=t * ttft, preprocess_s=0.01, prefill_s=0.09,
                   prompt_tokens=90, cached_tokens=0, image_tokens=64, generation_tokens=64,
                   prompt_tps=1000.0, generation_tps=v * speed * 1.1, end_to_end_tps=v * speed,
                   peak_memory=1.0) for v, t in zip(BASE, TTFT)]


def _result(samples: list[Sample]) -> CaseResult:
    return CaseResult(model="m", resolution="224x224", samples=samples, case_key="k",
                      workload={"prompt": "p", "max_tokens": 64})


STORED = BaselineCase("t", "224x224",
                      {m: [[float(getattr(s, m)) for s in _samples()]] for m in
                       ("end_to_end_tps", "ttft_s", "prompt_tokens", "image_tokens", "generation_tokens")},
                      libraries={"mlx": "1.0"}, workload={"prompt": "p", "max_tokens": 64})


class Remeasure:
    """A stand-in for measuring again: returns the given samples and counts its calls."""

    def __init__(self, samples: list[Sample] | None = None) -> None:
        self.samples, self.calls = samples, 0

    def __call__(self) -> list[Sample]:
        self.calls += 1
        if self.samples is None:
            raise AssertionError("measured again, but should not have been")
        return list(self.samples)


def _check(result: CaseResult, remeasure, stored=STORED, reference=None):
    return gate.check(result, "k", stored, tolerances=TOLERANCES, alpha=0.05,
                      libraries={"mlx": "1.0"}, reference=reference, remeasure=remeasure)


def test_check_a_regression_confirmed_by_measuring_again():
    result, again = _result(_samples(speed=0.7)), Remeasure(_samples(speed=0.7))
    c = _check(result, again)
    assert again.calls == 1 and len(result.samples) == 10  # the second measurement is kept
    assert c.status == "regressed" and c.confirmed is True
    speed = next(m for m in c.metrics if m.metric == "end_to_end_tps")
    assert speed.verdict == "regressed" and speed.n_current == 10 and speed.change == pytest.approx(-0.3)
    assert [m.metric for m in c.regressed] == ["end_to_end_tps"]


@pytest.mark.parametrize("first, second", [
    (0.7, 1.0),  # the second run is as fast as the baseline
    (0.5, 0.95),  # the pooled samples still regress, but the second run alone is within tolerance
])
def test_check_a_regression_not_confirmed_passes_with_a_note(first, second):
    result, again = _result(_samples(speed=first)), Remeasure(_samples(speed=second))
    c = _check(result, again)
    assert again.calls == 1 and len(result.samples) == 10
    assert c.status == "pass" and c.confirmed is False and c.regressed == []
    assert c.note == "a regression in Speed was not confirmed when measured again"


def test_check_keeps_only_the_metrics_the_second_measurement_confirms():
    result = _result(_samples(speed=0.7, ttft=3.0))
    # the second time TTFT is 10% above the baseline: the pooled TTFT still regresses, but the
    # second measurement alone is within its 15% tolerance, so only Speed is confirmed
    c = _check(result, Remeasure(_samples(speed=0.7, ttft=1.1)))
    assert c.status == "regressed" and c.confirmed is True
    verdicts = {m.metric: m.verdict for m in c.metrics}
    assert verdicts == {"end_to_end_tps": "regressed", "ttft_s": "ok"}


def test_check_measures_again_only_a_regression():
    again = Remeasure()
    assert _check(_result(_samples(speed=1.02)), again).status == "pass"
    assert _check(_result(_samples(speed=1.5)), again).status == "improved"
    assert _check(_result(_samples()), again, stored=None).status == "new"
    changed = _samples(speed=0.5)
    for s in changed:
        s.image_tokens += 5
    assert _check(_result(changed), again).status == "workload-changed"
    assert again.calls == 0


def test_a_second_measurement_with_other_token_counts_is_a_changed_workload_not_a_pass():
    from dataclasses import replace

    result = _result(_samples(speed=0.7))
    again = Remeasure([replace(s, generation_tokens=60) for s in _samples(speed=0.7)])
    c = _check(result, again)
    assert again.calls == 1 and c.status == "workload-changed"
    assert c.workload_changes["generation_tokens"][0] == 64


def test_check_without_remeasure_reports_the_first_verdict():
    result = _result(_samples(speed=0.7))
    c = _check(result, None)
    assert c.status == "regressed" and c.confirmed is None and len(result.samples) == 5


def test_check_never_measures_again_against_a_reference():
    stored = BaselineCase("t", "224x224", {"end_to_end_tps": [[200.0]]})
    result, again = _result(_samples()), Remeasure()
    c = _check(result, again, stored=stored, reference={"tolerance": 0.3})
    assert again.calls == 0 and len(result.samples) == 5
    assert c.status == "regressed" and c.confirmed is None
    (speed,) = c.metrics
    assert speed.verdict == "regressed" and speed.p_value is None and speed.tolerance == 0.3


# -- which stored baselines may fail a test --------------------------------------------------

def _stored(n: int, hours_apart: float | None, hosts: list[str] | None = None):
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    recorded = ([(start + timedelta(hours=i * hours_apart)).isoformat() for i in range(n)]
                if hours_apart is not None else [])
    return BaselineCase("t", "224x224", {"end_to_end_tps": [[100.0]] * n}, recorded=recorded,
                        hosts=hosts or [])


@pytest.mark.parametrize("n, hours, reason", [
    (1, 0.0, "holds 1 session recorded within 1 minute (at least 3 needed)"),
    (2, 5.0, "holds 2 sessions recorded within 5.0 hours (at least 3 needed)"),
    (4, 0.01, "sessions were all recorded within 2 minutes on one machine: one burst"),
    (3, None, "3 of the baseline's 3 sessions have no recorded time"),
])
def test_a_baseline_that_cannot_tell_the_drift_does_not_gate(n, hours, reason):
    assert reason in gate.ungated_reason(_stored(n, hours), reference=False, min_sessions=3)


def test_sessions_on_two_machines_gate_even_within_minutes():
    two = _stored(4, 0.1, hosts=["a1", "a1", "b2", "b2"])
    assert gate.ungated_reason(two, reference=False, min_sessions=3) is None
    one = _stored(4, 0.1, hosts=["a1"] * 4)
    assert "on one machine: one burst" in gate.ungated_reason(one, reference=False, min_sessions=3)
    assert "at least 5 needed" in gate.ungated_reason(two, reference=False, min_sessions=5)


def test_sessions_at_different_times_gate_and_references_never_do():
    assert gate.ungated_reason(_stored(3, 2.0), reference=False, min_sessions=3) is None
    assert gate.ungated_reason(_stored(1, 0.0), reference=False, min_sessions=1) is not None  # one burst
    assert "published reference" in gate.ungated_reason(_stored(5, 2.0), reference=True, min_sessions=3)


def _spread_sessions(path, hours: float) -> None:
    from datetime import datetime, timedelta, timezone

    doc = json.loads(path.read_text())
    for case in doc["cases"].values():
        start = datetime(2026, 11, 1, tzinfo=timezone.utc)
        case["recorded"] = [(start + timedelta(hours=i * hours)).isoformat() for i in range(case["sessions"])]
    path.write_text(json.dumps(doc))


def test_a_one_session_baseline_reports_a_slowdown_without_failing(fake, monkeypatch):
    run = [a for a in RUN if a != "--mlx-strict-baselines"] + ["--mlx-resolutions", "224x224,448x448"]
    fake.runpytest(*run, "--mlx-update-baselines").assert_outcomes(passed=2)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    result = fake.runpytest(*run, "--mlx-markdown", "pr.md")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm baselines (test-chip): 2 compared, 0 regressed, 0 new, 0 unused, 2 not gated*",
        "slower, not gated: *test_image_generation[[]224x224[]]: Speed -23.1%, *not gated: the "
        "baseline holds 1 session recorded within 1 minute (at least 3 needed)",
        "*--mlx-update-baselines=add*--mlx-strict-baselines*",
    ])
    assert "⚠️ slower, not gated" in (fake.path / "pr.md").read_text()
    fake.runpytest(*run, "--mlx-strict-baselines").assert_outcomes(failed=2)


def test_three_sessions_hours_apart_gate(fake, monkeypatch):
    run = [a for a in RUN if a != "--mlx-strict-baselines"] + ["--mlx-resolutions", "224x224"]
    fake.runpytest(*run, "--mlx-update-baselines").assert_outcomes(passed=1)
    for _ in range(2):
        fake.runpytest(*run, "--mlx-update-baselines=add").assert_outcomes(passed=1)
    result = fake.runpytest(*run)
    result.stdout.fnmatch_lines(["*1 compared, 0 regressed, 0 new, 0 unused, 1 not gated*"])  # one burst
    _spread_sessions(fake.path / FILE, hours=3)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    result = fake.runpytest(*run)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression in *224x224*", "*1 compared, 1 regressed*"])


# -- adaptive rounds ---------------------------------------------------------------------------

def test_auto_rounds_stop_once_the_medians_are_precise(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.05")
    run = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-json", "a.json", "-p", "no:benchmark"]
    result = fake.runpytest(*run, "--mlx-rounds", "auto", "--mlx-precision", "3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["Rounds chosen by precision (target: the 95% interval of each median within ±3.0%):",
                                 "  224x224: * rounds in *s, Speed ±?.?%, Decode ±?.?%, TTFT ±?.?% (precision reached)"])
    case = json.loads((fake.path / "a.json").read_text())["results"][0]
    info = case["workload"]["adaptive"]
    assert info["stopped"] == "precision reached" and max(info["half_width"].values()) <= 0.03
    assert case["workload"]["rounds"] == len(case["samples"]) > 5


def test_auto_rounds_stop_at_the_most_rounds(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.3")
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "-p", "no:benchmark",
                            "--mlx-rounds", "auto", "--mlx-precision", "0.1", "--mlx-max-rounds", "8")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  224x224: 8 rounds in *(max rounds)"])


def test_fixed_rounds_stay_the_default(fake):
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "-p", "no:benchmark")
    result.stdout.no_fnmatch_line("Rounds chosen by precision*")
    result.stdout.fnmatch_lines(["*| ±*% (n=5) |"])
