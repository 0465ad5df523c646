"""The terminal side: report header, progress lines, results tables and the gate's summary.

Registered on the controller only (never on a pytest-xdist worker); it also takes the
workers' results into the session and lets the session finish once, at the end.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .abreport import ab_section
from .report import (
    by_model,
    cache_sections,
    gate_summary,
    model_section,
    precision_lines,
    sensitivity,
    sensitivity_line,
    server_section,
)
from .mediareport import SECTIONS as MEDIA_SECTIONS
from .results import CaseResult
from .server import SIDE as SERVER_SIDE
from .session import BenchSession, session_key
from .xdist import XDIST_GROUP, grouped_count, worker_input

PROGRESS = "mlxvlm:progress"  # the user property that carries a worker's progress line


def figures(result: CaseResult) -> str:
    """The key figures of a finished case, for the progress line."""
    speed = result.summary("end_to_end_tps").median
    ttft = result.summary("ttft_s").median
    return (f"{result.model} {result.resolution}: {speed:.1f} tok/s, TTFT {ttft * 1000:.0f} ms, "
            f"decode {result.summary('generation_tps').median:.1f} tok/s")


def progress(config: pytest.Config, text: str) -> None:
    """With -v, a line per finished case: key figures and the estimated time left."""
    done, total, eta = config.stash[session_key].case_done()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.get_verbosity() >= 1:
        reporter.write_line(f"mlxvlm: {text} [{done}/{total}, ~{eta:.0f}s left]")


class MlxReporter:
    """Prints the results table per model and the gate's summary; finishes the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @property
    def bench(self) -> BenchSession:
        return self.config.stash[session_key]

    # -- pytest-xdist ---------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: tell each worker how the controller schedules."""
        node.workerinput.update(worker_input(self.config))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """pytest-xdist: the measured tests a worker collected (grouped ones), for the ETA."""
        if self.bench.started == 0.0:
            self.bench.started = time.perf_counter()
        self.bench.measured_total = max(self.bench.measured_total, grouped_count(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """pytest-xdist: the progress lines of cases measured on workers."""
        if report.when == "teardown" and hasattr(report, "node"):
            for name, text in report.user_properties:
                if name == PROGRESS:
                    progress(self.config, text)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: take a finished worker's results into this session's reports."""
        payload = getattr(node, "workeroutput", {}).get("mlxvlm")
        if payload:
            self.bench.absorb(payload)

    # -- header and summary ---------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        work = self.bench.settings.workload
        sizes = ", ".join(r.id for r in work.resolutions)
        lines = [
            f"mlxvlm: models {', '.join(work.models)}; {len(work.resolutions)} resolutions ({sizes})",
            (f"mlxvlm: rounds until each median is within ±{work.precision * 100:g}% (at least "
             f"{work.rounds}, at most {work.max_rounds}, {work.case_budget_s:g}s a case)" if work.adaptive
             else f"mlxvlm: {work.rounds} rounds") + f" after {work.warmup} warmup, {work.max_tokens} tokens each",
        ]
        dist = getattr(config.option, "dist", "no") if getattr(config.option, "numprocesses", None) else "no"
        if dist == "loadgroup":
            lines.append(f"mlxvlm: tests that use mlx_model run on one pytest-xdist worker "
                         f"(xdist_group {XDIST_GROUP!r}); results from all workers are merged")
        elif dist != "no":
            lines.append(f"mlxvlm: with --dist {dist}, measured tests run one at a time but "
                         "possibly on several workers, each loading the model; --dist load groups them")
        return lines

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        """Tests whose mlx_benchmark marker sets its own rounds, warmup or output length."""
        own = []
        for item in items:
            marker = item.get_closest_marker("mlx_benchmark")
            if marker is None:
                continue
            changed = {k: marker.kwargs[k] for k in ("rounds", "warmup", "max_tokens") if k in marker.kwargs}
            if changed:
                own.append(f"{item.name} ({', '.join(f'{k} {v}' for k, v in changed.items())})")
        if not own:
            return []
        shown = ", ".join(own[:3]) + (f" and {len(own) - 3} more" if len(own) > 3 else "")
        return [f"mlxvlm: {len(own)} test(s) set their own workload with mlx_benchmark: {shown}"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        bench = self.bench
        tr = terminalreporter
        if bench.results or bench.load_errors:
            machine = bench.machine
            for model, cases in by_model(bench.results).items():
                for side in dict.fromkeys(r.side for r in cases):
                    title = f"mlxvlm: {model} on {machine['chip']} ({machine['backend']})"
                    label = self._side_label(side)
                    tr.write_sep("=", title + (f", {side}: {label}" if side and label else f", {side}" if side else ""))
                    shown = [r for r in cases if r.side == side]
                    if side in MEDIA_SECTIONS:  # the video and batch suites' own tables
                        for line in MEDIA_SECTIONS[side](shown) + precision_lines(shown):
                            tr.write_line(line)
                        continue
                    if side == SERVER_SIDE:
                        for line in server_section(shown, self._side_label(side)) + precision_lines(shown):
                            tr.write_line(line)
                        continue
                    for line in model_section(model, shown, bench.load_times.get(model)) + precision_lines(shown):
                        tr.write_line(line)
                ab_lines = ab_section(cases)
                if ab_lines:
                    tr.write_sep("=", f"mlxvlm A/B: {model}, head against base, pair by pair")
                    for line in ab_lines:
                        tr.write_line(line)
            for model, error in bench.load_errors.items():
                tr.write_sep("=", f"mlxvlm: {model} not measured")
                tr.write_line(error)
        for title, lines in cache_sections(bench.cache_records):
            tr.write_sep("=", title)
            for line in lines:
                tr.write_line(line)
        if not bench.results and not bench.load_errors:
            self._outputs(tr)
            return
        policy = bench.settings.gate
        for model, cases in by_model([r for r in bench.results if not r.side]).items():
            detect = sensitivity(cases, policy.tolerances, policy.alpha)
            tr.write_line(f"{model}: " + sensitivity_line(detect, cases))
        if bench.gate_counts and bench.settings.ab.active:
            tr.write_sep("-", f"mlxvlm A/B ({bench.machine['key']}): "
                                f"{gate_summary(bench.gate_counts, ('compared', 'regressed'))}")
        elif bench.gate_counts:
            tr.write_sep("-", f"mlxvlm baselines ({bench.machine['key']}): {gate_summary(bench.gate_counts)}")
            for model, keys in bench.unused.items():
                for key in keys:
                    tr.write_line(f"unused baseline: {key} ({model}, {bench.baselines.path(model)})")
            for line in bench.baseline_messages:
                tr.write_line(line)
            for line in bench.ungated:
                tr.write_line(f"slower, not gated: {line}", yellow=True)
            if bench.ungated:
                tr.write_line("  a baseline gates with enough sessions at different times: add them with "
                              "--mlx-update-baselines=add (e.g. nightly), or gate anyway with "
                              "--mlx-strict-baselines")
        self._outputs(tr)

    def _side_label(self, side: str) -> str:
        if side == SERVER_SIDE:
            started = {bool((r.workload.get("server") or {}).get("started_here")) for r in self.bench.results
                       if r.side == SERVER_SIDE}
            urls = sorted({str((r.workload.get("server") or {}).get("url")) for r in self.bench.results
                           if r.side == SERVER_SIDE})
            return ("mlx_vlm.server started here" if started == {True} else "the server") + (
                f" at {', '.join(urls)}" if urls else "")
        ab = self.bench._ab
        if ab is None:
            return ""
        return ab.base.label if side == "base" else ab.head.label

    def _outputs(self, tr: Any) -> None:
        for line in self.bench.output_errors:
            tr.write_line(f"mlxvlm: {line}", red=True)
        for path in self.bench.written:
            tr.write_sep("-", f"mlxvlm: report written to {path}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.bench.finish(int(exitstatus))
