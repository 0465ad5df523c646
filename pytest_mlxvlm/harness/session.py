"""One session's state, and the one place that finishes it: baselines, history and reports."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..common.bandwidth import decode_limit, decode_weight_bytes, kv_bytes_per_position, lookup_gbps
from ..common.files import atomic_write_text, write_json
from ..common.machine import identity
from ..common.stats import per_comparison_alpha
from ..config.settings import Settings
from ..gate.abmode import ABSession
from ..gate.baselines import (
    BaselineError,
    BaselineFile,
    baseline_path,
    burst_note,
    case_from_result,
    read,
    reference_path,
    update,
)
from ..measure.isolation import IsolatedModel
from ..models.loading import model_slug
from ..reports.abreport import ab_markdown
from ..reports.exports import write_bmf, write_github_benchmark
from ..reports.history import git_state, session_record
from ..reports.report import by_model, gate_counts, json_document, markdown_report, used_settings
from ..reports.store import hide_password, open_store
from ..reports.workreport import work_markdown
from ..results import CaseResult, StepResult

settings_key = pytest.StashKey[Settings]()
session_key = pytest.StashKey["BenchSession"]()
side_key = pytest.StashKey[Any]()  # in a side's worker (A/B): the sidetest.SideTest it measures through
results_key = pytest.StashKey[list]()  # on an item: the cases its test measured


class BaselineStore:
    """The baselines of one chip under one directory: ``<dir>/<chip>/<model>.json``."""

    def __init__(self, directory: Path, chip: str) -> None:
        self.directory = directory
        self.chip = chip
        self._files: dict[str, BaselineFile | None | BaselineError] = {}

    def path(self, spec: str) -> Path:
        """Where the measured baseline of a model lives."""
        return baseline_path(self.directory, self.chip, model_slug(spec))

    def get(self, spec: str) -> BaselineFile | None:
        """The stored file of a model (measured, else a reference): None if there is none.

        Raises BaselineError (naming the file) if it cannot be read; read once per session.
        """
        if spec not in self._files:
            measured = self.path(spec)
            reference = reference_path(self.directory, self.chip, model_slug(spec))
            path = measured if measured.exists() or not reference.exists() else reference
            try:
                self._files[spec] = read(path, expect_chip=self.chip) if path.exists() else None
            except BaselineError as exc:
                self._files[spec] = exc
        value = self._files[spec]
        if isinstance(value, BaselineError):
            raise value
        return value

    def write(self, spec: str, cases: list[CaseResult], *, machine: dict[str, Any],
              libraries: dict[str, Any], mode: str) -> list[str]:
        """Write a model's passed cases under the file's lock; returns the keys written."""
        host = str(machine.get("host") or "")
        passed = {r.case_key: case_from_result(r, libraries, host) for r in cases if r.outcome == "passed"}
        return update(self.path(spec), model=spec, chip=self.chip, machine=machine,
                      cases=passed, mode=mode)


@dataclass
class BenchSession:
    """What one pytest session measured, and how it ends."""

    config: pytest.Config
    settings: Settings
    results: list[CaseResult] = field(default_factory=list)
    load_times: dict[str, float] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)
    cache_records: list[dict[str, Any]] = field(default_factory=list)
    unused: dict[str, list[str]] = field(default_factory=dict)
    measured_total: int = 0
    finished: int = 0
    started: float = 0.0
    progress_at: float | None = None  # when the last progress line was written
    pending_progress: list[str] = field(default_factory=list)  # written after the test's result
    collection_notes: list[str] = field(default_factory=list)  # said after collection (header)
    output_notes: list[str] = field(default_factory=list)  # said with the outputs: what was left out and why
    baseline_messages: list[str] = field(default_factory=list)
    ungated: list[str] = field(default_factory=list)  # regressions a weak baseline could not gate
    gate_counts: dict[str, int] = field(default_factory=dict)
    written: list[tuple[str, Path | str]] = field(default_factory=list)  # (what, where): files, database URLs
    output_errors: list[str] = field(default_factory=list)
    exitstatus: int | None = None  # set when the session finishes
    stalled_servers: dict[str, str] = field(default_factory=dict)  # URL -> why it was given up on
    _log_dir: Path | None = None
    _machine: dict[str, Any] | None = None
    _store: BaselineStore | None = None
    _weight_bytes: dict[str, tuple[int, int]] = field(default_factory=dict)
    _ab: ABSession | None = None
    _isolated: dict[str, IsolatedModel] = field(default_factory=dict)

    def isolated_model(self, spec: str) -> IsolatedModel:
        """The worker that measures a model with --mlx-isolate (one per model and session)."""
        if spec not in self._isolated:
            self._isolated[spec] = IsolatedModel(spec, timeout_s=self.settings.ab.timeout_s,
                                                 log_dir=self.log_dir)
        return self._isolated[spec]

    # -- logs of workers and servers ----------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        """Where the logs of this session's workers and servers go: ``mlxvlm-logs`` in pytest's
        temporary folder of this session (``--basetemp``, else ``pytest-of-USER/pytest-N``)."""
        if self._log_dir is None:
            factory = getattr(self.config, "_tmp_path_factory", None)
            if factory is not None:
                self._log_dir = Path(factory.getbasetemp()) / "mlxvlm-logs"
            else:  # pragma: no cover - pytest always has one
                import tempfile

                self._log_dir = Path(tempfile.mkdtemp(prefix="mlxvlm-logs-"))
        return self._log_dir

    @property
    def failed(self) -> bool:
        """Whether the session ended other than cleanly (failures, errors, Ctrl-C, not finished)."""
        return self.exitstatus not in (int(pytest.ExitCode.OK), int(pytest.ExitCode.NO_TESTS_COLLECTED))

    def kept_logs(self) -> Path | None:
        """The log folder when the session failed and logs were written, for the summary."""
        if self._log_dir is None or not self.failed:
            return None
        try:
            return self._log_dir if any(self._log_dir.iterdir()) else None
        except OSError:
            return None

    # -- paired A/B runs ----------------------------------------------------------------------

    @property
    def ab(self) -> ABSession | None:
        """The A/B session (worktree, workers), set up on first use; None when not A/B."""
        if self._ab is None and self.settings.ab.active:
            self._ab = ABSession(self.settings.ab, self.config.rootpath, log_dir=self.log_dir)
        return self._ab

    def close(self) -> None:
        """Stop the workers and remove the base worktree (every path out, Ctrl-C included);
        remove the logs of a session that ended cleanly (a failed one keeps them)."""
        if self._ab is not None:
            self._ab.close()
            self._ab = None
        for isolated in self._isolated.values():
            isolated.stop()
        if self._log_dir is not None and not self.failed:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    # -- identity and baselines ---------------------------------------------------------------

    @property
    def machine(self) -> dict[str, Any]:
        if self._machine is None:
            info = identity(self.settings.outputs.chip)
            self.config.hook.pytest_mlxvlm_update_machine_info(config=self.config, machine=info)
            self._machine = info
        return self._machine

    @property
    def libraries(self) -> dict[str, Any]:
        m = self.machine
        return {"mlx": m.get("mlx"), "mlx_vlm": m.get("mlx_vlm"), "python": m.get("python")}

    @property
    def baselines(self) -> BaselineStore:
        if self._store is None:
            self._store = BaselineStore(self.settings.gate.baseline_dir, self.machine["key"])
        return self._store

    def drift_alpha(self, tolerances: dict[str, float]) -> float:
        """The level of one metric's drift allowance: ``--mlx-alpha`` is the chance that a
        session of unchanged code fails on drift, split over its measured tests x gated metrics."""
        return per_comparison_alpha(self.settings.gate.alpha,
                                    max(1, self.measured_total) * len(tolerances))

    # -- bandwidth bound ----------------------------------------------------------------------

    @property
    def bandwidth_gbps(self) -> float | None:
        return self.settings.outputs.bandwidth or lookup_gbps(self.machine)

    def decode_bytes(self, loaded: Any, side: str = "") -> tuple[int | None, int | None]:
        """What decode reads per token: (weight bytes, KV cache bytes per position of context),
        None where unknown. Computed once per model in process; a model in a worker
        (--mlx-isolate, a side of an A/B run) has them from its worker's load answer."""
        ab = getattr(loaded, "ab", None)
        if ab is not None:
            return ab.decode_bytes.get(side or "head", (None, None))
        isolated = getattr(loaded, "isolated", None)
        if isolated is not None:
            return isolated.decode_bytes
        if getattr(loaded, "model", None) is not None:
            if loaded.spec not in self._weight_bytes:
                self._weight_bytes[loaded.spec] = (
                    decode_weight_bytes(loaded.model), kv_bytes_per_position(loaded.model)
                )
            return self._weight_bytes[loaded.spec]
        return (None, None)

    def decode_limit(self, loaded: Any, result: CaseResult) -> dict[str, float] | None:
        """The bandwidth bound of decode for a case, and how close the measurement came."""
        gbps = self.bandwidth_gbps
        if not gbps or not result.samples:
            return None
        weights, kv = self.decode_bytes(loaded, result.side)
        if weights is None or kv is None:
            return None
        limit = decode_limit(
            gbps, weights, kv,
            int(result.summary("prompt_tokens").median),
            int(result.summary("generation_tokens").median),
        )
        limit["fraction"] = result.summary("generation_tps").median / limit["limit_tps"]
        return limit

    # -- progress -----------------------------------------------------------------------------

    def case_done(self) -> tuple[int, int, float]:
        """Count a finished case: (finished, total, estimated seconds left)."""
        self.finished += 1
        elapsed = time.perf_counter() - self.started
        total = max(self.measured_total, self.finished)
        return self.finished, total, elapsed / self.finished * (total - self.finished)

    # -- pytest-xdist hand-over ---------------------------------------------------------------

    def cache_dicts(self) -> list[dict[str, Any]]:
        """The cache records with their steps as dicts (JSON report, xdist hand-over)."""
        return [{**rec, "steps": [st.to_dict() for st in rec["steps"]]} for rec in self.cache_records]

    def worker_payload(self) -> str:
        """What a pytest-xdist worker measured, for the controller."""
        return json.dumps({
            "results": [r.to_dict() for r in self.results],
            "load_times": self.load_times,
            "load_errors": self.load_errors,
            "cache": self.cache_dicts(),
        })

    def absorb(self, payload: str) -> None:
        """Take a worker's payload into this (the controller's) session."""
        data = json.loads(payload)
        self.results.extend(CaseResult.from_dict(r) for r in data["results"])
        self.load_times.update(data["load_times"])
        self.load_errors.update(data["load_errors"])
        self.cache_records.extend(
            {**rec, "steps": [StepResult.from_dict(st) for st in rec["steps"]]}
            for rec in data["cache"]
        )

    # -- the end ------------------------------------------------------------------------------

    def finish(self, exitstatus: int) -> int:
        """Baselines, Markdown, history and JSON: each attempted on its own, so that one that
        cannot be written (read-only, a directory, a full disk) is reported and loses nothing else.
        A Ctrl-C while one is written leaves that file as it was and makes the session an
        interrupted one (no history; the reports marked); returns the session's exit status."""
        self.written = []
        self.exitstatus = exitstatus
        if exitstatus == int(pytest.ExitCode.USAGE_ERROR):  # stopped before measuring: a setting
            return exitstatus  # that cannot work; no report replaces an earlier one
        outputs = self.settings.outputs
        if self.results:
            self._attempt("baselines", None, lambda: self._finish_baselines(exitstatus))
        if outputs.markdown_path is not None and self.results:
            self._attempt("Markdown report", outputs.markdown_path,
                          lambda: self._write_markdown(outputs.markdown_path, self.interrupted))
        # the history and the trackers' files feed series: not from a partial session, nor from an
        # A/B one (its head is measured side by side with the base, not as a series' sessions are)
        history = outputs.history_url or outputs.history_path
        series = [("history", history, lambda: self._append_history(history)),
                  ("Bencher file", outputs.bmf_path, lambda: write_bmf(outputs.bmf_path, self.results)),
                  ("github-action-benchmark files", outputs.github_benchmark_dir,
                   lambda: write_github_benchmark(outputs.github_benchmark_dir, self.results, self.machine))]
        for what, target, write in series:
            if target is None or not self.results:
                continue
            where = hide_password(str(target))
            if self.settings.ab.active:
                self.output_notes.append(f"{what} not written to {where}: an A/B session measures base and "
                                         "head side by side, not as a series' sessions are")
            elif not self.interrupted:
                self._attempt(what, where, write)
        if outputs.json_path is not None:
            self._attempt("JSON report", outputs.json_path,
                          lambda: self._write_json(outputs.json_path, self.interrupted))
        return self.exitstatus

    @property
    def interrupted(self) -> bool:
        return self.exitstatus == int(pytest.ExitCode.INTERRUPTED)

    def _attempt(self, what: str, path: Path | str | None, write: Any) -> None:
        where = f" to {path}" if path is not None else ""
        try:
            written = write()
        except (OSError, BaselineError, ValueError) as exc:
            self.output_errors.append(f"{what} not written{where}: {type(exc).__name__}: {exc}")
            return
        except KeyboardInterrupt:
            self.exitstatus = int(pytest.ExitCode.INTERRUPTED)
            self.output_errors.append(f"{what} not written{where}: interrupted (Ctrl-C); what was "
                                      "there before is left as it was")
            return
        if written is not None:
            self.written.append((what, written))

    def _narrowed(self) -> str:
        """How this session was narrowed to some of its tests ("" when it was not)."""
        option = self.config.option
        for name, flag in (("keyword", "-k"), ("markexpr", "-m"), ("lf", "--lf"), ("deselect", "--deselect")):
            if getattr(option, name, None):
                return flag
        if any("::" in str(arg) for arg in self.config.invocation_params.args):
            return "test ids on the command line"
        return ""

    def _finish_baselines(self, exitstatus: int) -> None:
        """Count the verdicts, list unused baselines, and write updates from a passed session."""
        gate = self.settings.gate
        if self.settings.ab.active:  # judged against the base side, not stored baselines
            self.gate_counts = gate_counts([r for r in self.results if r.side == "head"])
            return
        measured: dict[str, set[str]] = {}
        for r in self.results:
            measured.setdefault(r.model, set()).add(r.case_key)
        narrowed = self._narrowed()
        unreadable = 0
        for spec, keys in measured.items():
            try:
                stored = self.baselines.get(spec)
            except BaselineError:
                unreadable += len(keys)
                continue
            if stored is not None:
                unused = sorted(set(stored.cases) - keys)
                if unused and narrowed:  # the cases left out may well be the ones not used
                    self.baseline_messages.append(f"{spec}: {len(unused)} stored case(s) not measured in this "
                                                  f"session, which ran only some tests ({narrowed}): not "
                                                  "listed as unused")
                elif unused:
                    self.unused[spec] = unused
                note = burst_note(stored) if not gate.update else None
                if note:
                    self.baseline_messages.append(f"{spec}: {note}")
        written = 0
        if gate.update and exitstatus != 0:
            self.baseline_messages.append(
                f"baselines not updated: the session did not pass (exit status {exitstatus}); "
                "nothing was written"
            )
        elif gate.update:
            for spec, cases in by_model(self.results).items():
                path = self.baselines.path(spec)
                try:
                    keys = self.baselines.write(spec, cases, machine=self.machine,
                                                libraries=self.libraries, mode=gate.update)
                except (BaselineError, OSError) as exc:
                    self.baseline_messages.append(f"baselines not updated: {exc}")
                    continue
                written += len(keys)
                self.baseline_messages.append(
                    f"{len(keys)} baseline case(s) written to {path}" if keys
                    else f"no baseline case written to {path} (all exist)")
        self.gate_counts = gate_counts(
            self.results, unused=sum(len(v) for v in self.unused.values()), updated=written,
            unreadable=unreadable,
        )

    def _append_history(self, target: Path | str) -> Path | str:
        """One session into the history (a file, or one transaction of a database)."""
        cases = [r for r in self.results if r.side != "base"]
        record = session_record(
            cases,
            machine=self.machine,
            settings=used_settings(cases, self.settings.describe()),
            git=git_state(self.config.rootpath),
        )
        store = open_store(target)
        store.append(record)
        return store.where

    def _write_markdown(self, path: Path, interrupted: bool) -> Path:
        if self.settings.ab.active:
            text = ab_markdown(self.results, machine=self.machine, counts=self.gate_counts,
                               inconclusive_fails=self.settings.ab.inconclusive == "fail")
        else:
            text = markdown_report(self.results, machine=self.machine,
                                   counts=self.gate_counts, unused=self.unused)
        work = work_markdown(self.results)
        if work:
            text = text.rstrip("\n") + "\n\n" + "\n".join(work)
        if interrupted:
            text = "> ⚠️ interrupted: this report holds only the cases measured before Ctrl-C\n\n" + text
        path = _partial_path(path) if interrupted and path.exists() else path
        atomic_write_text(path, text)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            self._attempt("step summary", Path(summary), lambda: _append_text(Path(summary), text))
        return path

    def _write_json(self, path: Path, interrupted: bool) -> Path:
        document = json_document(
            self.results,
            settings=used_settings(self.results, self.settings.describe()),
            machine=self.machine,
            extra={
                "load_times_s": self.load_times,
                "errors": self.load_errors,
                "cache": self.cache_dicts(),
                **({"interrupted": True} if interrupted else {}),
            },
        )
        path = _partial_path(path) if interrupted and path.exists() else path
        write_json(path, document)
        return path


def _append_text(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _partial_path(path: Path) -> Path:
    """Where an interrupted session's report goes when a complete one would be replaced."""
    return path.with_name(f"{path.stem}.interrupted{path.suffix}")
