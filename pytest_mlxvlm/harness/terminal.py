"""The terminal side: report header, progress lines, results tables and the gate's summary.

Registered on the controller only (never on a pytest-xdist worker); it also takes the
workers' results into the session and lets the session finish once, at the end.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable

import pytest

from ..config.settings import SERVER_NAMES, Settings, SettingsError
from ..reports.abreport import AB_COUNTS, ab_section, inconclusive_lines
from ..reports.mediareport import SECTIONS as MEDIA_SECTIONS
from ..reports.report import (
    by_model,
    cache_sections,
    gate_summary,
    model_section,
    precision_lines,
    sensitivity,
    sensitivity_line,
    server_section,
)
from ..reports.serving import serving_lines
from ..reports.workreport import work_lines
from ..results import SERVER_SIDE, CaseResult
from .session import BenchSession, session_key
from .xdist import XDIST_GROUP, grouped_count, is_measured, is_worker, measures, worker_input

PROGRESS = "mlxvlm:progress"  # the user property that carries a worker's progress line


def figures(result: CaseResult) -> str:
    """The key figures of a finished case, for the progress line (named as the tables name them)."""
    speed = result.summary("end_to_end_tps").median
    ttft = result.summary("ttft_s").median
    decode = result.summary("generation_tps").median
    return (f"{result.model} {result.resolution}: Speed {speed:.1f} tok/s, TTFT {ttft * 1000:.0f} ms, "
            f"Decode {decode:.1f} tok/s")


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def write_visibly(config: pytest.Config, line: str) -> None:
    """A line through pytest's terminal writer with output capture suspended, so that a person
    sees it while a test runs (without -s), as pytest's own live logging does."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capman = config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
        reporter.write_line(line)


def _due(config: pytest.Config, every_case: bool) -> bool:
    """Is a progress line due now? With -v, one per finished case; otherwise (and for lines
    within a case) at most every ``--mlx-progress`` seconds, counted from the session's start."""
    bench = config.stash[session_key]
    if every_case and config.get_verbosity() >= 1:
        return True
    interval = bench.settings.outputs.progress_s
    if interval is None:
        return False
    since = bench.progress_at or bench.started
    return time.perf_counter() - since >= interval


def progress(config: pytest.Config, text: str) -> None:
    """A finished case: its key figures, where the session is and the estimated time left.
    With -v on every case; without, when ``--mlx-progress`` seconds have passed (a long session).
    The line waits for the test's own result (``flush_progress``), so that it follows it."""
    bench = config.stash[session_key]
    done, total, eta = bench.case_done()
    if not _due(config, every_case=True):
        return
    elapsed = time.perf_counter() - bench.started
    left = "done" if done >= total else f"~{duration(eta)} left"
    bench.pending_progress.append(f"mlxvlm: [{done}/{total}] {text}; {duration(elapsed)} so far, {left}")
    bench.progress_at = time.perf_counter()


def flush_progress(config: pytest.Config) -> None:
    """Write the progress lines of the test just reported."""
    bench = config.stash[session_key]
    lines, bench.pending_progress = bench.pending_progress, []
    for line in lines:
        write_visibly(config, line)


def status(config: pytest.Config, text: str) -> None:
    """Where a long case is (A/B pairs so far), at most every ``--mlx-progress`` seconds."""
    if is_worker(config) or not _due(config, every_case=False):
        return
    bench = config.stash[session_key]
    write_visibly(config, f"mlxvlm: [{bench.finished + 1}/{max(bench.measured_total, bench.finished + 1)}] {text}")
    bench.progress_at = time.perf_counter()


def _case_label(item: pytest.Item, model_ids: dict[str, str]) -> str:
    """A measured test's case without its model: ``224x224``, ``16f@2fps``, ``c2``."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ""
    spec = callspec.params.get("mlx_model") or callspec.params.get("mlx_server")
    model_id = model_ids.get(spec, "") if isinstance(spec, str) else ""
    parts = callspec.id.split("-")
    if model_id:
        size = len(model_id.split("-"))  # a model id may hold dashes itself
        for i in range(len(parts) - size + 1):
            if "-".join(parts[i:i + size]) == model_id:
                del parts[i:i + size]
                break
    return "-".join(parts)


def _rounds_words(work: Any) -> str:
    if work.adaptive:
        return (f"{work.rounds} to {work.max_rounds} rounds (until each median is within "
                f"±{work.precision * 100:g}%, at most {work.case_budget_s:g} s a case)")
    return f"{work.rounds} round{'s' if work.rounds != 1 else ''}"


def workload_lines(items: list[pytest.Item], settings: Settings, model_ids: dict[str, str],
                   measured: Callable[[pytest.Item], bool], most: int = 6) -> list[str]:
    """What each measured test will do, with its own ``mlx_benchmark`` marker applied: one line
    per test function and workload, with its cases (sizes, clips, batches) without the model."""
    groups: dict[tuple[str, str, int, int], list[str]] = {}
    for item in items:
        if not measured(item):
            continue
        marker = item.get_closest_marker("mlx_benchmark")
        try:
            work = (settings.for_marker(**marker.kwargs) if marker is not None and not marker.args
                    else settings).workload
        except SettingsError:
            continue  # the test errors with the reason when it runs
        labels = groups.setdefault(
            (getattr(item, "originalname", item.name), _rounds_words(work), work.warmup, work.max_tokens), [])
        case = _case_label(item, model_ids)
        if case and case not in labels:
            labels.append(case)
    lines = []
    for (name, rounds, warmup, tokens), labels in groups.items():
        shown = ", ".join(labels[:6]) + (f" and {len(labels) - 6} more" if len(labels) > 6 else "")
        cases = f" [{shown}]" if labels else ""
        lines.append(f"mlxvlm: {name}{cases}: {rounds} after {warmup} warmup, {tokens} tokens each")
    if len(lines) > most:
        lines = lines[:most - 1] + [f"mlxvlm: ... and {len(lines) - most + 1} more measured tests"]
    return lines


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
        """After a test's result: its cases' progress lines (pytest-xdist: from the workers)."""
        if report.when != "teardown":
            return
        if hasattr(report, "node"):
            for name, text in report.user_properties:
                if name == PROGRESS:
                    progress(self.config, text)
        flush_progress(self.config)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: take a finished worker's results into this session's reports."""
        payload = getattr(node, "workeroutput", {}).get("mlxvlm")
        if payload:
            self.bench.absorb(payload)

    # -- header and summary ---------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """pytest-xdist's scheduling; under xdist the controller collects nothing, so the
        session's workload is said here (in one process, per test after collection)."""
        work = self.bench.settings.workload
        dist = getattr(config.option, "dist", "no") if getattr(config.option, "numprocesses", None) else "no"
        if dist == "no":
            return []
        lines = [f"mlxvlm: models {', '.join(work.models)}; session defaults (a test's "
                 f"mlx_benchmark marker may change them): {len(work.resolutions)} resolutions, "
                 f"{_rounds_words(work)} after {work.warmup} warmup, {work.max_tokens} tokens each"]
        if dist == "loadgroup":
            lines.append(f"mlxvlm: tests that use mlx_model run on one pytest-xdist worker "
                         f"(xdist_group {XDIST_GROUP!r}); results from all workers are merged")
        else:
            lines.append(f"mlxvlm: with --dist {dist}, measured tests run one at a time but "
                         "possibly on several workers, each loading the model; --dist load groups them")
        return lines

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        """The models, and what each measured test will do: its sizes or cases, rounds, warmup
        and output length as it will use them (its mlx_benchmark marker applied)."""
        bench = self.bench
        lines = list(bench.collection_notes)
        if not any(measures(item) for item in items):
            return lines
        models = list(dict.fromkeys(bench.settings.workload.models))
        lines.insert(0, f"mlxvlm: models {', '.join(models)}")
        return lines + workload_lines(items, bench.settings, bench.model_ids, is_measured)

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
                        for line in (server_section(shown, self._side_label(side)) + serving_lines(shown)
                                     + precision_lines(shown)):
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
        for line in work_lines(bench.results):
            tr.write_line(line, red=line.lstrip().startswith("ADDED") and "reported" not in line)
        policy = bench.settings.gate
        for model, cases in by_model([r for r in bench.results if not r.side]).items():
            detect = sensitivity(cases, policy.tolerances, policy.alpha)
            tr.write_line(f"{model}: " + sensitivity_line(detect, cases, policy.alpha))
        if bench.gate_counts and bench.settings.ab.active:
            tr.write_sep("-", f"mlxvlm A/B ({bench.machine['key']}): "
                                f"{gate_summary(bench.gate_counts, AB_COUNTS)}")
            passes = bench.settings.ab.inconclusive == "pass"
            for line in inconclusive_lines(bench.results):
                tr.write_line(f"inconclusive{' (passes)' if passes else ''}: {line}", yellow=True)
            if passes and bench.gate_counts.get("inconclusive"):
                tr.write_line("  nothing was shown either way; --mlx-ab-inconclusive fail fails such cases")
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
            servers = [r.workload.get("server") or {} for r in self.bench.results if r.side == SERVER_SIDE]
            started = {bool(s.get("started_here")) for s in servers}
            urls = sorted({str(s.get("url")) for s in servers})
            kinds = {str(s.get("kind") or "mlx_vlm") for s in servers}
            name = SERVER_NAMES.get(kinds.pop()) if len(kinds) == 1 else None
            return (f"{name} started here" if started == {True} and name else "the server") + (
                f" at {', '.join(urls)}" if urls else "")
        ab = self.bench._ab
        if ab is None:
            return ""
        return ab.base.label if side == "base" else ab.head.label

    def _outputs(self, tr: Any) -> None:
        for line in self.bench.output_errors:
            tr.write_line(f"mlxvlm: {line}", red=True)
        for line in self.bench.output_notes:
            tr.write_line(f"mlxvlm: {line}")
        for what, path in self.bench.written:
            done = "session appended to" if what == "history" else "written to"
            tr.write_sep("-", f"mlxvlm: {what} {done} {path}")
        logs = self.bench.kept_logs()
        if logs is not None:
            tr.write_line(f"mlxvlm: the logs of this session's workers and servers are kept in {logs}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write every output; a Ctrl-C meanwhile makes the session's status INTERRUPTED."""
        status = self.bench.finish(int(exitstatus))
        if status != int(exitstatus):
            session.exitstatus = status
