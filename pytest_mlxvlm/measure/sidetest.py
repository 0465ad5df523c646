"""One side's own test, run in its measuring worker (the A/B mode's per-side code).

asv imports each benchmark into each environment; here the worker of each side runs the test in
a nested pytest session on that side's checkout, with the model it loaded: the test module, its
conftest fixtures (those that touch ``mlx_model`` too) and its body are that side's code. Each
``mlx_bench.run()`` hands its workload (prompt, image, options) to the parent through
``SideTest.workload``, which answers the parent's requests (the paired measurements) until the
parent sends the side's measured case back; the body then goes on with it (its assertions see
real figures). The session's end is the answer to ``run_test``.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import pytest

_ACTIVE: SideTest | None = None  # the worker runs one nested session at a time


def active() -> SideTest | None:
    """The side test being run by this worker, if any (read by the plugin's pytest_configure)."""
    return _ACTIVE


class SideAborted(Exception):
    """The A/B session stopped this side's test: its case failed, or the other side's test ended."""


class SideTest:
    """The link between a nested session's ``mlx_bench.run()`` and the parent."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.cases = 0

    @property
    def loaded(self) -> Any:
        """The model this worker loaded (``mlx_model`` in the nested session)."""
        return self.worker.loaded

    def workload(self, request: dict[str, Any], workload: dict[str, Any], *, case_key: str,
                 label: str) -> dict[str, Any]:
        """Announce a case's workload, serve the parent's measurements, and return this side's
        measured case (a ``CaseResult`` dict) once the parent sends it."""
        channel = self.worker.channel
        self.cases += 1
        channel.write({"ok": True, "event": "workload", "case": self.cases, "request": request,
                       "workload": workload, "case_key": case_key, "label": label})
        while True:
            message = channel.read()
            if message is None:
                raise KeyboardInterrupt  # the parent is gone or said quit
            op = message.get("op")
            if op == "continue":
                return dict(message["result"])
            if op == "abort":
                raise SideAborted(str(message.get("reason") or "stopped by the A/B session"))
            answer = self.worker.answer(message)
            if channel.closed:
                raise KeyboardInterrupt
            channel.write(answer)


def _line(report: Any) -> str:
    """A report's reason in one line: the exception's message, or a skip's reason."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0] if crash.message else ""
    text = str(longrepr or "").strip().splitlines()
    return text[-1] if text else ""


class _Outcome:
    """pytest plugin of the nested session: what happened to the test, in one word and line."""

    def __init__(self) -> None:
        self.collected = 0
        self.errors: list[str] = []
        self.phases: list[tuple[str, str, str]] = []  # (when, outcome, reason)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(_line(report))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.outcome != "passed":
            self.phases.append((report.when, report.outcome, _line(report)))

    def summary(self, exit_code: int) -> dict[str, str]:
        if exit_code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
            name = pytest.ExitCode(exit_code).name.lower().replace("_", " ")
            return {"outcome": "error", "message": f"its pytest session stopped: {name} (exit status {exit_code})"}
        if self.errors:
            return {"outcome": "error", "message": f"collection failed: {self.errors[0]}"}
        if self.collected == 0:
            return {"outcome": "not-found", "message": f"no such test here (exit status {exit_code})"}
        for when, outcome, reason in self.phases:
            if outcome == "skipped":
                return {"outcome": "skipped", "message": reason}
            if SideAborted.__name__ in reason:
                return {"outcome": "aborted", "message": reason}
            return {"outcome": "failed" if when == "call" else "error",
                    "message": reason if when == "call" else f"in {when}: {reason}"}
        return {"outcome": "passed", "message": ""}


def plugin_arguments() -> list[str]:
    """``-p pytest_mlxvlm.plugin`` where neither its entry point nor ``$PYTEST_PLUGINS`` loads it
    (naming it twice would register it twice)."""
    if "pytest_mlxvlm.plugin" in os.environ.get("PYTEST_PLUGINS", ""):
        return []
    if any(e.name == "mlxvlm" for e in importlib.metadata.entry_points(group="pytest11")):
        return []
    return ["-p", "pytest_mlxvlm.plugin"]


def run_test(worker: Any, message: dict[str, Any]) -> dict[str, Any]:
    """``run_test``: the side's test in a nested pytest session (``message["args"]``: the test's
    path and id in this side's checkout, then the session's options); answered when it ends."""
    global _ACTIVE
    if worker.loaded is None:
        return {"ok": False, "error": "no model loaded"}
    args = [*message["args"], *plugin_arguments()]
    outcome = _Outcome()
    saved = os.environ.pop("PYTEST_ADDOPTS", None)  # the side's own ini applies, not the parent's
    _ACTIVE = SideTest(worker)
    try:
        code = pytest.main(args, plugins=[outcome])
    finally:
        _ACTIVE = None
        if saved is not None:
            os.environ["PYTEST_ADDOPTS"] = saved
    return {"ok": True, "done": True, "exit": int(code), **outcome.summary(int(code))}
