"""One A/B case of the paired mode: both sides' pairs until the verdict is clear, their work
profiles, the failure message, and how the case joins the test's results."""

from __future__ import annotations

from typing import Any

import pytest

from ..common.stats import per_comparison_alpha
from ..config.settings import Settings
from ..gate import work as work_gate
from ..gate.abmode import judge_pairs, run_pairs
from ..gate.paired import format_change
from ..measure.workers import WorkerError
from ..reports.abreport import settle_text
from ..results import CaseResult, GenerationRequest, Sample
from .session import BenchSession, results_key
from .terminal import duration, status


# What a change means in the orders at once (docs/ab.md): where both sides share one device, a
# slower side leaves more of it to the other, so a change can read larger than the code's alone.
AT_ONCE = {
    "duet": "both sides prefill and decode at once: on a shared device a change can read larger than alone",
    "staggered": "both sides decode at once: on a shared device a Decode or Speed change can read larger "
                 "than alone",
    "barrier": "TTFT alone, Decode and Speed at once: on a shared device their change can read larger "
               "than alone",
}


def note_work(node: Any, result: CaseResult) -> None:
    """The work verdict as a JUnit property of the test (``<property name="mlxvlm_work">``)."""
    check = result.work_check
    if check is not None:
        text = f"{check.verdict}: {check.description}" + (f"; {check.outputs}" if check.outputs else "")
        node.user_properties.append(("mlxvlm_work", text))


def work_failure(result: CaseResult, machine: str, outputs: str, where: str) -> list[str]:
    """The lines of a work (or outputs, when ``outputs`` is ``gate``) failure of a case; none
    when it passes. ``machine``: the model and machine, as the failure names them."""
    check = result.work_check
    if check is None:
        return []
    lines = []
    if check.failed:
        lines.append(f"mlxvlm: work regressed in {result.case_key} at {result.resolution} ({machine}): "
                     f"{check.description} ({where})")
    if outputs == "gate" and check.outputs_differ_at is not None:
        lines.append(f"mlxvlm: outputs changed in {result.case_key} at {result.resolution} ({machine}): "
                     f"{check.outputs} ({where})")
    return lines


def ab_work(ab_model: Any, requests: dict[str, GenerationRequest]) -> tuple[dict[str, dict[str, Any]], str]:
    """Each side's work profile (one untimed generation each, of that side's own request) and
    why a side has none."""
    work: dict[str, dict[str, Any]] = {}
    for side in ("base", "head"):
        try:
            work[side] = ab_model.work(side, requests[side])[1]
        except WorkerError as exc:
            if "work profile unavailable" not in str(exc):
                raise
            return work, f"{side}: " + str(exc).partition("work profile unavailable: ")[2]
    return work, ""


def run_ab_case(session: BenchSession, settings: Settings, loaded: Any, *, key: str, label: str,
                test_id: str, requests: dict[str, GenerationRequest], warmup: int,
                workloads: dict[str, dict[str, Any]],
                workload_changes: dict[str, tuple[Any, Any]] | None = None,
                ) -> tuple[dict[str, CaseResult], str | None]:
    """One A/B case: both sides warmed up, then pairs until the verdict is clear; returns the
    sides' results (the head's holds the comparison) and the failure message, None when it
    passes. ``loaded.ab`` holds the workers; ``requests`` may differ per side (each side's own
    code computed its workload); ``workload_changes`` are the differences already seen in them."""
    plan, policy = settings.ab, settings.gate
    ab_model = loaded.ab
    alpha = per_comparison_alpha(policy.alpha, max(1, session.measured_total) * len(policy.ab_tolerances))

    def judge(base: list[Sample], head: list[Sample]) -> Any:
        return judge_pairs(key, base, head, tolerances=policy.ab_tolerances, alpha=alpha,
                           method=plan.estimator, workload_changes=workload_changes)

    ab_model.ensure_loaded()
    both = ab_model.measure_both_at_once(plan.order)
    progress = f"A/B {ab_model.spec} {label}"
    run = run_pairs(lambda side, _: ab_model.measure(side, requests[side]), requests["head"], warmup=warmup,
                    plan=plan, judge=judge,
                    measure_both=None if both is None else lambda _, base_first: both(requests, base_first),
                    on_pair=lambda n, seconds: status(
                        session.config,
                        f"{progress}: {n} pairs of {plan.min_pairs} to {plan.max_pairs} in "
                        f"{duration(seconds)} (at most {duration(plan.budget_s)} a case)"))
    work, why = ab_work(ab_model, requests) if policy.work != "off" else ({}, "")
    comparison = judge(run.base, run.head)
    if comparison.status == "inconclusive" and comparison.more_pairs is not None and run.head:
        comparison.more_seconds = comparison.more_pairs * run.seconds / len(run.head)
    ab = session.ab
    assert ab is not None
    how = (f"{len(run.head)} pairs ({plan.order}) in {run.seconds:.0f} s, stopped: {run.stopped}; "
           f"base {ab.base.label}, head {ab.head.label}")
    comparison.note = "; ".join(filter(None, [comparison.note, how, AT_ONCE.get(plan.order, "")]))
    sides = {}
    for side, samples, warm in (("base", run.base, run.base_warmup), ("head", run.head, run.head_warmup)):
        sides[side] = CaseResult(
            model=ab_model.spec, resolution=label, samples=samples, warmup=warm,
            workload={**workloads[side], "rounds": len(samples), "pairs": len(samples)},
            load_time_s=ab_model.load_times.get(side, 0.0), test_id=test_id,
            case_key=key, side=side, comparison=comparison if side == "head" else None,
        )
        sides[side].bandwidth = session.decode_limit(loaded, sides[side])
        sides[side].work = work.get(side)
    head = sides["head"]
    if policy.work != "off":
        head.work_check = work_gate.check(work.get("head"), work.get("base"), against="base",
                                          gated=policy.work == "gate", unavailable=why)
    work_lines = work_failure(head, f"{ab_model.spec} on {session.machine['key']}", policy.outputs,
                              f"base {ab.base.label}, head {ab.head.label}")
    fails = comparison.status in ("regressed", "workload-changed") or (
        comparison.status == "inconclusive" and plan.inconclusive == "fail")
    if not fails:
        return sides, "\n".join(work_lines) or None
    lines = [f"mlxvlm: A/B {comparison.status} in {key} ({ab_model.spec} on "
             f"{session.machine['key']}): base {ab.base.label}, head {ab.head.label}"]
    if comparison.status == "workload-changed":
        lines += [f"  {k}: base {a}, head {b}" for k, (a, b) in comparison.workload_changes.items()]
    lines += [f"  {format_change(m)} (tolerance {m.tolerance * 100:.0f}%)" for m in comparison.regressed]
    lines.append(f"  {comparison.note}")
    if comparison.status == "inconclusive":
        lines.append(f"  {settle_text(comparison)} (failed: --mlx-ab-inconclusive fail)")
    return sides, "\n".join([*lines, *work_lines])


def record_ab_case(item: pytest.Item, config: pytest.Config, sides: dict[str, CaseResult]) -> None:
    """Both sides of an A/B case join the test's results; its A/B lines go to a report section."""
    item.stash.setdefault(results_key, []).extend([sides["base"], sides["head"]])
    note_work(item, sides["head"])
    comparison = sides["head"].comparison
    if comparison is not None:
        text = f"{sides['head'].case_key}: {comparison.status}; {comparison.note}"
        if comparison.status == "inconclusive":
            text += f"; {settle_text(comparison)}"
        item.add_report_section("call", "mlxvlm A/B", text)
    config.hook.pytest_mlxvlm_case_finished(config=config, result=sides["head"])
