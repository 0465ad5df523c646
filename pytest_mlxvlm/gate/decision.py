"""The gate's flow for one case: compare, confirm a regression by measuring again, explain."""

from __future__ import annotations

import math
import shlex
from typing import Any, Callable, Sequence

from ..results import METRICS, CaseComparison, CaseResult, Sample
from .baselines import BaselineCase
from .compare import (
    compare_metric,
    library_differences,
    token_differences,
    workload_differences,
)


def _samples(samples: Sequence[Sample]) -> dict[str, list[float]]:
    return {m: [float(getattr(s, m)) for s in samples] for m in METRICS}


def evaluate(
    key: str,
    current: dict[str, list[float]],
    workload: dict[str, Any],
    stored: BaselineCase | None,
    *,
    tolerances: dict[str, float],
    alpha: float,
    libraries: dict[str, Any],
    reference: dict[str, Any] | None = None,
    drift_alpha: float | None = None,
) -> CaseComparison:
    """Compare a case's samples with its stored baseline (None: a new case)."""
    if stored is None:
        return CaseComparison(key, "new")
    libs = library_differences(stored.libraries, libraries)
    if reference:
        tol = float(reference.get("tolerance", 0.3))
        metrics = [
            compare_metric(m, stored.metrics[m], current[m], tol, alpha, reference=True)
            for m in stored.sessions
            if m in current and METRICS[m].better != "exact"
        ]
    else:
        changed = workload_differences(stored.workload, workload)
        if changed:
            return CaseComparison(
                key, "not-comparable", workload_changes=changed, library_changes=libs,
                note="the baseline was measured with other workload settings; not compared",
            )
        tokens = token_differences(stored.metrics, current)
        if tokens:
            return CaseComparison(
                key, "workload-changed", workload_changes=tokens, library_changes=libs,
                note="token counts changed: the work itself changed, speed is not compared",
            )
        metrics = [
            compare_metric(m, stored.sessions[m], current[m], tol, alpha, drift_alpha=drift_alpha)
            for m, tol in tolerances.items()
            if m in stored.sessions and m in current
        ]
    status = (
        "regressed" if any(m.verdict == "regressed" for m in metrics)
        else "improved" if any(m.verdict == "improved" for m in metrics)
        else "undecidable" if metrics and all(m.verdict == "undecidable" for m in metrics)
        else "pass"
    )
    return CaseComparison(key, status, metrics=metrics, library_changes=libs)


BURST_S = 3600.0  # sessions closer together than this saw the drift of minutes, not of days


def _span(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def ungated_reason(stored: BaselineCase | None, *, reference: bool, min_sessions: int) -> str | None:
    """Why a stored baseline cannot fail a test (None: it can).

    A baseline gates only when it can say how much this machine drifts between sessions: at
    least ``min_sessions`` sessions, recorded at two or more different times (sessions an
    hour or more apart) or on two or more machines (separately started: ``machine.host_id``),
    not in one burst on one machine. A published reference figure never gates."""
    from datetime import datetime

    if stored is None:
        return None
    if reference:
        return "the baseline is a published reference figure (one run, another method)"
    n = stored.n_sessions
    try:  # "" for a session written by an older version
        times = sorted(datetime.fromisoformat(r) for r in stored.recorded if r)
    except (TypeError, ValueError):
        times = []
    span = f" recorded within {_span((times[-1] - times[0]).total_seconds())}" if len(times) == n and times else ""
    if n < min_sessions:
        return f"the baseline holds {n} session{'s' if n != 1 else ''}{span} (at least {min_sessions} needed)"
    if len(times) != n:
        return (f"{n - len(times)} of the baseline's {n} sessions have no recorded time (written by an older "
                "version): it can gate once --mlx-update-baselines=add has replaced them (or at once after "
                "--mlx-update-baselines=all)")
    bursts = 1 + sum((b - a).total_seconds() >= BURST_S for a, b in zip(times, times[1:]))
    if bursts < 2 and stored.n_hosts < 2:
        return f"the baseline's {n} sessions were all{span} on one machine: one burst"
    return None


def check(
    result: CaseResult,
    key: str,
    stored: BaselineCase | None,
    *,
    tolerances: dict[str, float],
    alpha: float,
    libraries: dict[str, Any],
    reference: dict[str, Any] | None = None,
    remeasure: Callable[[], list[Sample]] | None = None,
    drift_alpha: float | None = None,
) -> CaseComparison:
    """Evaluate a case; a regression is measured again once and kept only if confirmed.

    Confirmed means: the pooled samples (first and second measurement) still regress
    against the baseline, and the second measurement alone is also worse than tolerance.
    The second measurement's samples are added to ``result``.
    """
    kw = dict(tolerances=tolerances, alpha=alpha, libraries=libraries, reference=reference,
              drift_alpha=drift_alpha)
    first = evaluate(key, _samples(result.samples), result.workload, stored, **kw)
    if first.status != "regressed" or remeasure is None or reference:
        return first
    again = remeasure()
    result.samples.extend(again)
    pooled = evaluate(key, _samples(result.samples), result.workload, stored, **kw)
    if pooled.status == "workload-changed":  # the second measurement's token counts differ: its own verdict
        return pooled
    second = evaluate(key, _samples(again), result.workload, stored, **kw)
    second_worse = {m.metric: m.worse_by > m.tolerance for m in second.metrics}
    confirmed = [
        m for m in pooled.metrics if m.verdict == "regressed" and second_worse.get(m.metric)
    ]
    if confirmed:
        pooled.status, pooled.confirmed = "regressed", True
        for m in pooled.metrics:
            if m.verdict == "regressed" and m not in confirmed:
                m.verdict = "ok"
        return pooled
    names = ", ".join(METRICS[m.metric].label for m in first.regressed)
    pooled.status = "improved" if any(m.verdict == "improved" for m in pooled.metrics) else "pass"
    for m in pooled.metrics:
        if m.verdict == "regressed":
            m.verdict = "ok"
    pooled.confirmed = False
    pooled.note = f"a regression in {names} was not confirmed when measured again"
    return pooled


def _fmt(metric: str, value: float) -> str:
    unit = METRICS[metric].unit
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"
    if unit == "GB":
        return f"{value:.3f} GB"
    return f"{value:.2f} {unit}"


def describe_metric(m: Any) -> str:
    """One line: metric, baseline and current values, change, tolerance, evidence."""
    label = f"{METRICS[m.metric].label} ({m.metric})"
    evidence = (
        f"Mann-Whitney p={m.p_value:.3g} (n={m.n_current} vs {m.n_baseline})"
        if m.p_value is not None
        else f"reference figure (n={m.n_baseline}), tolerance only"
    )
    change = "n/a" if math.isinf(m.change) else f"{m.change * 100:+.1f}%"
    if m.drift is not None:
        level = f" at level {m.drift_alpha:.2g}" if m.drift_alpha is not None else ""
        allowance = (f"tolerance {m.tolerance * 100:.0f}%, drift over {m.sessions} baseline "
                     f"sessions allows {m.allowed * 100:.0f}%{level}")
    else:
        allowance = f"tolerance {m.tolerance * 100:.0f}%"
    return (
        f"{label}: baseline {_fmt(m.metric, m.baseline)}, now {_fmt(m.metric, m.current)}, "
        f"{change} ({allowance}), {evidence}"
    )


def update_command(args: Sequence[str], selector: str) -> str:
    """The command that accepts the new figures as the baseline for this case."""
    kept = [a for a in args if not a.startswith("--mlx-update-baselines")]
    return shlex.join(["pytest", *kept, "--mlx-update-baselines", "-k", selector])


def failure_message(
    comparison: CaseComparison,
    *,
    model: str,
    chip: str,
    baseline_path: str,
    command: str,
) -> str:
    """What a person needs to act on a failed gate."""
    if comparison.status == "workload-changed":
        lines = [
            f"mlxvlm: the workload of {comparison.key} changed ({model} on {chip}); "
            "speed was not compared:"
        ]
        lines += [f"  {k}: baseline {a}, now {b}" for k, a, b in
                  ((k, *v) for k, v in comparison.workload_changes.items())]
    else:
        confirmation = " (confirmed by measuring again)" if comparison.confirmed else ""
        lines = [f"mlxvlm: regression in {comparison.key} ({model} on {chip}){confirmation}:"]
        lines += [f"  {describe_metric(m)}" for m in comparison.regressed]
    if comparison.library_changes:
        libs = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in comparison.library_changes.items())
        lines.append(f"  library versions changed since the baseline: {libs}")
    lines.append(f"  baseline file: {baseline_path}")
    lines.append(f"  if this is expected, update the baseline: {command}")
    return "\n".join(lines)
