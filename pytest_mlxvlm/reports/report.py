"""Reports: the terminal table per model and the JSON document (pure functions)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from ..common.stats import detectable_regression, min_p_value, relative_noise
from ..results import METRICS, REPORT_SCHEMA, CaseResult

COLUMNS = (  # the metrics' own headings (results.METRICS), so that tables and options share names
    "Resolution",
    "Pixels",
    *(METRICS[m].heading for m in ("time_s", "generation_tokens", "end_to_end_tps", "ttft_s",
                                   "prompt_tps", "generation_tps", "image_tokens", "peak_memory")),
    "Spread",
)


def _fmt_pixels(pixels: int) -> str:
    if not pixels:
        return "-"
    return f"{pixels / 1e6:.2f}M" if pixels >= 1e6 else f"{pixels / 1e3:.0f}K"


def case_row(result: CaseResult, label: str | None = None, bandwidth: bool = False) -> list[str]:
    """One table row: medians of each metric, and the spread of Speed (IQR / median)."""
    med = {m: result.summary(m).median for m in METRICS}
    speed = result.summary("end_to_end_tps")
    extra = []
    if bandwidth:
        bw = result.bandwidth
        extra = [f"{bw['fraction'] * 100:.0f}% of {bw['limit_tps']:.0f}" if bw else "-"]
    return [
        label or result.resolution,
        _fmt_pixels(result.width * result.height),
        f"{med['time_s']:.2f}s",
        f"{med['generation_tokens']:.0f}",
        f"{med['end_to_end_tps']:.1f} tok/s",
        f"{med['ttft_s'] * 1000:.0f}ms",
        f"{med['prompt_tps']:.0f} tok/s",
        f"{med['generation_tps']:.1f} tok/s",
        f"{med['image_tokens']:.0f}",
        f"{med['peak_memory']:.2f}GB",
        f"±{speed.spread * 100:.1f}% (n={speed.n})",
        *extra,
    ]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown-compatible table with aligned columns."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def aggregate(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Totals over the cases, per round: configs, total time, total tokens, aggregate tok/s."""
    speeds = [r.summary("end_to_end_tps").median for r in results]
    total_time = sum(r.summary("time_s").median for r in results)
    total_tokens = sum(r.summary("generation_tokens").median for r in results)
    fastest = max(results, key=lambda r: r.summary("end_to_end_tps").median)
    slowest = min(results, key=lambda r: r.summary("end_to_end_tps").median)
    return {
        "configs": len(results),
        "total_time_s": total_time,
        "total_tokens": int(total_tokens),
        "aggregate_tps": total_tokens / total_time if total_time else 0.0,
        "average_tps": sum(speeds) / len(speeds),
        "fastest": {"resolution": fastest.resolution, "tps": max(speeds)},
        "slowest": {"resolution": slowest.resolution, "tps": min(speeds)},
    }


def by_model(results: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    grouped: dict[str, list[CaseResult]] = defaultdict(list)
    for result in results:
        grouped[result.model].append(result)
    return dict(grouped)


def model_section(model: str, results: Sequence[CaseResult], load_time_s: float | None) -> list[str]:
    """The lines of one model's section: table, summary line and aggregate row."""
    resolutions = [r.resolution for r in results]
    shared = len(set(resolutions)) < len(resolutions)
    with_bw = any(r.bandwidth for r in results)
    rows = [case_row(r, f"{r.resolution} {r.test_name}" if shared else None, with_bw)
            for r in results]
    header = COLUMNS + (("% of BW limit (tok/s)",) if with_bw else ())
    lines = render_table(header, rows)
    agg = aggregate(results)
    lines.append("")
    lines.append(
        f"Average {agg['average_tps']:.1f} tok/s across {agg['configs']} "
        f"resolution{'s' if agg['configs'] != 1 else ''}; "
        f"fastest {agg['fastest']['resolution']} ({agg['fastest']['tps']:.1f} tok/s), "
        f"slowest {agg['slowest']['resolution']} ({agg['slowest']['tps']:.1f} tok/s)"
    )
    lines.append(
        f"Aggregate: {agg['configs']} configs, {agg['total_time_s']:.2f}s total, "
        f"{agg['total_tokens']} tokens, {agg['aggregate_tps']:.1f} tok/s"
        + (f"; model loaded in {load_time_s:.2f}s" if load_time_s is not None else "")
    )
    bw = next((r.bandwidth for r in results if r.bandwidth), None)
    if bw:
        lines.append(
            f"Bandwidth limit of decode: {bw['gbps']:.0f} GB/s / bytes read per token "
            f"(weights + KV cache at the mean context); % of BW limit = Decode / limit"
        )
    return lines


SERVER_COLUMNS = ("Case", "Clients", "Time", "Tokens", "Speed", "Aggregate", "TTFT p50/p95/p99",
                  "ITL p50/p95/p99", "Decode", "Prefill*", "Peak mem**", "Spread")


def server_memory(info: dict[str, Any]) -> str:
    """A server case's peak memory: from the metrics endpoint (or why not), else the stream's."""
    value = info.get("metrics_peak_memory_gb")
    if isinstance(value, str):
        return value
    value = value or info.get("server_peak_memory_gb")
    return f"{float(value):.2f}GB" if value else "-"


def server_case_label(r: CaseResult) -> str:
    """``224x224 generation``, ``224x224 concurrency``, ``224x224 rate 0.5/s``, ``mixed workload``."""
    info = r.workload.get("server") or {}
    kind = r.test_name.replace("test_server_", "")
    if "rate" in info:
        fraction = info.get("capacity_fraction")
        return f"{r.resolution} rate" + (f" x{fraction:g}" if fraction is not None else "")
    return f"{r.resolution} {kind}"


def server_section(results: Sequence[CaseResult], where: str = "") -> list[str]:
    """The table of cases measured through a server (``side == "server"``): per-request
    latency percentiles as the client saw them, and the aggregate tok/s of concurrent clients."""
    rows, notes, peak = [], [], 0.0
    for r in results:
        info = r.workload.get("server") or {}
        ttft, itl = info.get("ttft_ms") or {}, info.get("itl_ms") or {}
        med = {m: r.summary(m).median for m in ("time_s", "generation_tokens", "end_to_end_tps",
                                                 "generation_tps", "prompt_tps")}
        speed = r.summary("end_to_end_tps")
        label = server_case_label(r)
        flag = "" if info.get("fixed_length", True) else " ⚠"
        rows.append([
            label, f"{info['rate']:.3g}/s" if "rate" in info else str(info.get("clients", 1)), f"{med['time_s']:.2f}s",
            f"{med['generation_tokens']:.0f}{flag}", f"{med['end_to_end_tps']:.1f} tok/s",
            f"{info.get('aggregate_tps', 0.0):.1f} tok/s",
            "/".join(f"{ttft.get(q, 0.0):.0f}" for q in ("p50", "p95", "p99")) + "ms",
            "/".join(f"{itl.get(q, 0.0):.1f}" for q in ("p50", "p95", "p99")) + "ms",
            f"{med['generation_tps']:.1f} tok/s",
            f"{med['prompt_tps']:.0f} tok/s" if med["prompt_tps"] else "-",
            server_memory(info),
            f"±{speed.spread * 100:.1f}% (n={speed.n})",
        ])
        if not info.get("fixed_length", True):
            notes.append(f"⚠ {label}: {info.get('short_requests')} of {info.get('requests')} requests "
                         f"not {r.workload.get('max_tokens')} tokens long (finish "
                         f"{', '.join(info.get('finish_reasons') or [])}): Tokens and Speed are the actual ones")
        peak = max(peak, float(info.get("server_peak_memory_gb") or 0.0))
    lines = render_table(SERVER_COLUMNS, rows)
    lines.append("")
    lines.append("Through the server" + (f" ({where})" if where else "") + ": times as the client saw "
                 "them, per request (Clients: requests kept in flight, or /s: an open-loop rate); Aggregate = "
                 "tokens / the load's duration (first request sent to the last one's end; synchronized "
                 "rounds: per round); "
                 "*Prefill as the server reported it; **the server's high-water mark after the case, "
                 "from its metrics endpoint")
    if peak:
        lines.append(f"Server peak memory (its own high-water mark since it started): {peak:.2f}GB")
    return lines + notes


def precision_lines(results: Sequence[CaseResult]) -> list[str]:
    """With --mlx-rounds auto: per case, the rounds used, the precision reached and why it stopped."""
    cases = [r for r in results if isinstance(r.workload.get("adaptive"), dict)]
    if not cases:
        return []
    target = cases[0].workload["adaptive"]["target"]
    lines = [f"Rounds chosen by precision (target: the 95% interval of each median within "
             f"±{target * 100:.1f}%):"]
    for r in cases:
        info = r.workload["adaptive"]
        widths = ", ".join(f"{METRICS[m].label} " + (f"±{w * 100:.1f}%" if w is not None else "no interval")
                           for m, w in info["half_width"].items())
        lines.append(f"  {r.resolution}: {len(r.samples)} rounds in {info['seconds']:.1f}s, {widths} "
                     f"({info['stopped']})")
    return lines


WORKLOAD_SETTINGS = ("prompt", "max_tokens", "rounds", "warmup", "image")
IMAGE_SIDES = ("", "base", "head")  # cases of the image sweep (the others are video, batch, server)


def _one_or_all(values: Sequence[Any]) -> Any:
    """The value all cases share, or each distinct value in order when they differ."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return distinct[0] if len(distinct) == 1 else distinct


def used_settings(results: Sequence[CaseResult], defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings the session's cases actually used (a marker's or a ``run()`` keyword's
    included), per test and in all: a value the cases share, or the list of their values;
    ``defaults`` (the session's own settings) are kept beside them."""
    if not results:
        return {**defaults, "tests": {}, "defaults": defaults}
    tests: dict[str, dict[str, Any]] = {}
    by_test: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_test[(r.test_id or r.case_key).split("[")[0]].append(r)
    for test, cases in by_test.items():
        tests[test] = {"cases": list(dict.fromkeys(r.resolution for r in cases)),
                       **{k: _one_or_all([r.workload.get(k) for r in cases]) for k in WORKLOAD_SETTINGS}}
    return {
        "models": list(dict.fromkeys(r.model for r in results)),
        "resolutions": list(dict.fromkeys(r.resolution for r in results
                                          if r.side in IMAGE_SIDES and r.resolution != "text")),
        "quick": defaults.get("quick"),
        **{k: _one_or_all([r.workload.get(k) for r in results]) for k in WORKLOAD_SETTINGS},
        "tests": tests,
        "defaults": defaults,
    }


def json_document(
    results: Sequence[CaseResult],
    *,
    settings: dict[str, Any],
    machine: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full JSON report: settings, machine identity, every case with every sample."""
    models = {}
    for model, cases in by_model(results).items():
        models[model] = {"aggregate": aggregate(cases)}
    return {
        "schema_version": REPORT_SCHEMA,
        "tool": "pytest-mlxvlm",
        "settings": settings,
        "machine": machine,
        "metrics": {
            name: {"label": m.label, "unit": m.unit, "better": m.better}
            for name, m in METRICS.items()
        },
        "models": models,
        "results": [r.to_dict() for r in results],
        **(extra or {}),
    }


def gate_counts(results: Sequence[CaseResult], unused: int = 0, updated: int = 0,
                unreadable: int = 0) -> dict[str, int]:
    """How the cases fared against their baselines (``unreadable``: cases whose model's baseline
    file could not be read, each failed with the file's problem)."""
    counts = {"compared": 0, "regressed": 0, "improved": 0, "inconclusive": 0, "undecidable": 0,
              "new": 0, "workload changed": 0, "not comparable": 0, "not gated": 0, "unused": unused,
              "updated": updated, "added work": 0, "not compared (baseline unreadable)": unreadable}
    for r in results:
        if r.work_check is not None and r.work_check.failed and r.side in ("", "head"):
            counts["added work"] += 1
        c = r.comparison
        if c is None:
            continue
        if c.status in ("pass", "regressed", "improved", "inconclusive", "undecidable"):
            counts["compared"] += 1
            if not c.gated:
                counts["not gated"] += 1
                continue  # a regression a weak baseline shows is reported, not counted as one
        key = {"workload-changed": "workload changed", "not-comparable": "not comparable"}.get(
            c.status, c.status
        )
        if key in counts and key != "compared":
            counts[key] += 1
    return counts


def gate_summary(counts: dict[str, int],
                 always: tuple[str, ...] = ("compared", "regressed", "new", "unused")) -> str:
    """``12 compared, 1 regressed, 2 new, 1 unused`` (other counts only when not zero)."""
    parts = [f"{counts[k]} {k}" for k in always]
    parts += [f"{v} {k}" for k, v in counts.items() if k not in always and v]
    return ", ".join(parts)


def sensitivity(results: Sequence[CaseResult], tolerances: dict[str, float], alpha: float) -> dict[str, float | None]:
    """Per gated metric, the largest (worst) smallest-detectable regression over the cases.

    With a baseline, from the spread of both sample sets; without one, assuming a baseline
    of the same size and spread as this run.
    """
    out: dict[str, float | None] = {}
    for metric, tol in tolerances.items():
        worst: float | None = 0.0
        for r in results:
            c = r.comparison
            found = [m for m in (c.metrics if c is not None else []) if m.metric == metric]
            if found and found[0].p_value is not None:
                value = found[0].detectable
            else:
                values = r.values(metric)
                value = detectable_regression(len(values), len(values), relative_noise(values, values), tol, alpha)
            if value is None:
                worst = None
                break
            worst = max(worst, value)
        out[metric] = worst
    return out


def rounds_label(results: Sequence[CaseResult]) -> str:
    """The measured rounds of the cases: ``5 rounds`` or ``3-5 rounds`` (markers may differ)."""
    counts = sorted({r.rounds for r in results}) or [0]
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{span} rounds"


def sensitivity_line(detectable: dict[str, float | None], results: Sequence[CaseResult],
                     alpha: float = 0.05) -> str:
    """The smallest regression each gated metric can show, at the rounds the cases used; where
    none can be shown, why (too few samples to reach ``alpha``) and the rounds that would do."""
    parts = []
    for metric, value in detectable.items():
        label = METRICS[metric].label
        parts.append(f"{label} {value * 100:.0f}%" if value is not None else f"{label} none")
    line = f"Smallest regression detectable here at {rounds_label(results)} (80% power): " + ", ".join(parts)
    if any(v is None for v in detectable.values()):
        need = 1
        while min_p_value(need, need) >= alpha:
            need += 1
        line += (f" (none: against a baseline of one such session, a test of these few samples "
                 f"cannot reach p < {alpha:g}; at least {need} rounds, or more baseline sessions)")
    return line


def _verdict(m: Any) -> str:
    mark = {"regressed": "❌ regressed", "improved": "🟢 improved", "ok": "✅ ok",
            "undecidable": f"⚪ undecidable at n={m.n_current} vs {m.n_baseline}"}[m.verdict]
    if m.p_value is not None:
        return f"{mark} (p={m.p_value:.2g})"
    return f"{mark} (reference)"


def markdown_report(
    results: Sequence[CaseResult], *, machine: dict[str, Any], counts: dict[str, int],
    unused: dict[str, list[str]],
) -> str:
    """A pull-request comment: a table per model (baseline, now, change, verdict)."""
    lines = [f"## pytest-mlxvlm on `{machine.get('key')}`", "",
             f"**{gate_summary(counts)}** ({machine.get('chip')}, {machine.get('backend')}, "
             f"mlx {machine.get('mlx')}, mlx-vlm {machine.get('mlx_vlm')})", ""]
    for model, cases in by_model(results).items():
        lines += [f"### {model}", "", "| Case | Metric | Baseline | Now | Change | Verdict |",
                  "|---|---|---|---|---|---|"]
        for r in cases:
            c = r.comparison
            if c is None or c.status == "new":
                med = r.summary("end_to_end_tps").median
                lines.append(f"| `{r.case_key or r.resolution}` | Speed | – | {med:.2f} tok/s | – | 🆕 no baseline |")
                continue
            if c.status in ("workload-changed", "not-comparable"):
                what = "; ".join(f"{k}: {a} → {b}" for k, (a, b) in c.workload_changes.items())
                lines.append(f"| `{c.key}` | workload | | | | ⚠️ {c.status.replace('-', ' ')}: {what} |")
                continue
            for m in c.metrics:
                unit = METRICS[m.metric].unit
                verdict = _verdict(m)
                if not c.gated and m.verdict == "regressed":
                    verdict = verdict.replace("❌ regressed", "⚠️ slower, not gated")
                lines.append(
                    f"| `{c.key}` | {METRICS[m.metric].label} | {m.baseline:.4g} {unit} | "
                    f"{m.current:.4g} {unit} | {m.change * 100:+.1f}% | {verdict} |"
                )
            if c.note:
                lines.append(f"| `{c.key}` | | | | | {c.note} |")
        for key in unused.get(model, []):
            lines.append(f"| `{key}` | | | | | unused baseline |")
        lines.append("")
    return "\n".join(lines) + "\n"


CACHE_COLUMNS = ("Step", "Description", "Expected", "Actual", "Cached tokens", "TTFT",
                 "Speedup vs cold", "Status")


def cache_sections(records: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """One table per (model, engine): every cache step, its evidence and status."""
    grouped: dict[tuple[str, str], list[tuple[str, Any]]] = defaultdict(list)
    for rec in records:
        test = rec["test"].rpartition("::")[2]
        for step in rec["steps"]:
            grouped[(rec["model"], rec["engine"])].append((test, step))
    out = []
    for (model, engine), steps in grouped.items():
        rows = []
        for test, st in steps:
            status = "ok" if st.passed else ("WRONG OUTPUT" if st.correct is False else "FAILED")
            rows.append([
                f"{test.split('[')[0].replace('test_cache_', '')}: {st.step}",
                st.description, st.expected, st.actual,
                f"{st.cached_tokens}/{st.prompt_tokens}",
                f"{st.ttft_s * 1000:.0f}ms", f"{st.speedup:.2f}x", status,
            ])
        failed = sum(1 for _, st in steps if not st.passed)
        lines = render_table(CACHE_COLUMNS, rows)
        lines.append(f"{len(steps) - failed} of {len(steps)} cache steps as expected")
        out.append((f"mlxvlm cache: {engine} on {model}", lines))
    return out
