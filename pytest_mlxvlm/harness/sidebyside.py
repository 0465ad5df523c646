"""Each side runs its own code: the A/B mode's tests of the repository under test, per side.

A test of the repository under test that measures with ``mlx_bench`` does not run in this
process under ``--mlx-ab-base`` / ``--mlx-ab-python``: its fixtures and body run in the base's
worker from the base's checkout and in the head's worker from the head's (``measure.sidetest``,
as asv imports a benchmark into each environment), each with the model its worker loaded. Each
``mlx_bench.run()`` there hands its workload over; this process compares the two (a prompt,
image or option that differs is a changed workload), pairs their rounds, judges them, and sends
each side its own measured case, so the body's assertions run on real figures. The built-in
suites and tests outside the repository keep one workload, computed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from ..config.settings import ABPlan, Outputs, Settings
from ..measure.workers import WorkerError
from ..models.loading import LoadedModel
from ..results import CaseResult, GenerationRequest
from .abcase import record_ab_case, run_ab_case
from .bench import marker_settings
from .resolve import flag
from .session import BenchSession, session_key
from .xdist import nodeid

per_side_key = pytest.StashKey[bool]()  # on an item: it runs per side
PACKAGE = Path(__file__).resolve().parents[1]  # pytest_mlxvlm: its built-in suites are not per side
FORWARDED = ("mlx_prompt", "mlx_max_tokens", "mlx_rounds", "mlx_warmup")  # options a side's session gets
SIDES = ("base", "head")


def for_side(settings: Settings) -> Settings:
    """A side's nested session: its test only, no A/B of its own, no isolation, no outputs."""
    return dataclasses.replace(settings, ab=ABPlan(), outputs=Outputs(chip=settings.outputs.chip),
                               workload=dataclasses.replace(settings.workload, isolate=False, suites=()))


class NotInThisProcess:
    """``mlx_model.model`` / ``.processor`` where the model lives in workers: using it fails the
    test with one line that says why, instead of an AttributeError on None."""

    def __init__(self, what: str, why: str) -> None:
        self._what = what
        self._why = why

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        pytest.fail(f"{self._what}.{name}: {self._why}", pytrace=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"{self._what}(...): {self._why}", pytrace=False)

    def __repr__(self) -> str:
        return f"<{self._what}: not in this process>"


WHY = {
    "ab": ("in the A/B mode the model is loaded in the base's and the head's workers, not in this "
           "process; a test of the repository under test that measures with mlx_bench runs in "
           "those workers, its fixtures included (docs/ab.md); other code cannot reach the model"),
    "isolated": ("with --mlx-isolate the model is loaded in the measuring worker, not in this "
                 "process; run without --mlx-isolate to use it here"),
}


def worker_model(spec: str, remote: Any, kind: str) -> LoadedModel:
    """``mlx_model`` when the model lives in workers (``kind``: ``ab`` or ``isolated``)."""
    return LoadedModel(spec=spec, path=None, model=NotInThisProcess("mlx_model.model", WHY[kind]),
                       processor=NotInThisProcess("mlx_model.processor", WHY[kind]),
                       load_time_s=remote.load_time_s, **{kind: remote})


def head_root(bench: BenchSession) -> Path:
    """The checkout whose tests run per side: the repository (with a base revision) or the rootdir."""
    ab = bench.ab
    assert ab is not None
    return (ab.repo or bench.config.rootpath).resolve()


def runs_per_side(item: pytest.Item, bench: BenchSession) -> bool:
    """A test of the repository under test that measures with ``mlx_bench``."""
    if "mlx_bench" not in getattr(item, "fixturenames", ()) or "::" not in item.nodeid:
        return False
    path = Path(item.path).resolve()
    return path.is_relative_to(head_root(bench)) and not path.is_relative_to(PACKAGE)


def side_file(item: pytest.Item, bench: BenchSession, side: str) -> Path:
    """The test's file in a side's checkout (the base's worktree holds the same relative path)."""
    path = Path(item.path).resolve()
    ab = bench.ab
    assert ab is not None
    if side == "head" or ab.worktree is None:
        return path
    return ab.worktree / path.relative_to(head_root(bench))


def nested_args(item: pytest.Item, bench: BenchSession, side: str, path: Path) -> list[str]:
    """The nested session of one side: this test alone, the same models and sizes (so that its
    id is the same), the workload options given on this command line (the side's own ini
    gives the rest), no .pytest_cache, no addopts, its own temporary folder."""
    config, work = bench.config, bench.settings.workload
    ab = bench.ab
    assert ab is not None
    args = [f"{path}::{item.nodeid.split('::', 1)[1]}", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            "-W", "ignore::pytest.PytestAssertRewriteWarning",  # the worker imported the plugin first
            "--basetemp", str(ab.scratch / f"{side}-test"), "--mlx-suite", "off",
            "--mlx-resolutions", ",".join(r.id for r in work.resolutions)]
    # option=value: pytest reads a separate value that is a path as a test path, before the plugin
    # is loaded, and would move the nested session's rootdir (harness/rootdir.py)
    for spec in work.models:
        args.append(f"--mlx-model={spec}")
    overridden = {}  # -o NAME=VALUE on this command line: given here as much as a flag is
    for entry in getattr(config.option, "override_ini", None) or []:
        name, _, value = entry.partition("=")
        overridden[name.strip()] = value
    for name in FORWARDED:
        value = getattr(config.option, name, None)
        if value is not None:
            args.append(f"{flag(name)}={value}")
        elif name in overridden:
            args += ["-o", f"{name}={overridden[name]}"]
    if (config.option.mlx_image is not None or "mlx_image" in overridden) and work.image is not None:
        args.append(f"--mlx-image={work.image}")
    return args


def _short(text: str, limit: int = 48) -> str:
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{shown!r} ({len(text)} characters)"


def _image(path: Any) -> str:
    """An image by size and content (pixels, not file bytes: two PNG encoders may differ)."""
    if path is None:
        return "none"
    from PIL import Image

    with Image.open(path) as img:
        pixels = img.convert("RGB")
        return f"{img.width}x{img.height} (pixels {hashlib.sha1(pixels.tobytes()).hexdigest()[:8]})"


def workload_changes(base: dict[str, Any], head: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What each side's code asked for, where it differs: prompt, image, output length, keywords."""
    changes: dict[str, tuple[Any, Any]] = {}
    if base["prompt"] != head["prompt"]:
        changes["prompt"] = (_short(base["prompt"]), _short(head["prompt"]))
    images = (_image(base.get("image")), _image(head.get("image")))
    if images[0] != images[1]:
        changes["image"] = images
    if base["max_tokens"] != head["max_tokens"]:
        changes["max_tokens"] = (base["max_tokens"], head["max_tokens"])
    kwargs = (base.get("generate_kwargs") or {}, head.get("generate_kwargs") or {})
    for name in sorted(set(kwargs[0]) | set(kwargs[1])):
        if kwargs[0].get(name) != kwargs[1].get(name):
            changes[name] = (kwargs[0].get(name, "unset"), kwargs[1].get(name, "unset"))
    return changes


def _request(message: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(image=message.get("image"), prompt=message["prompt"],
                             max_tokens=int(message["max_tokens"]),
                             generate_kwargs=dict(message.get("generate_kwargs") or {}))


class SideBySideTest:
    """The conversation with both workers about one test: its cases, then its end."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.config = item.config
        self.bench: BenchSession = item.config.stash[session_key]
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        self.spec = str(params.get("mlx_model") or self.bench.settings.workload.models[0])
        resolution = params.get("mlx_resolution")
        self.resolution = resolution.id if resolution is not None else "text"
        self.settings = marker_settings(item, self.bench.settings)
        self.loaded: LoadedModel | None = None
        self.cases_done = 0
        self.ended = False  # both sides' tests have ended: their workers wait for requests again

    def run(self) -> None:
        ab = self.bench.ab
        assert ab is not None
        try:
            remote = ab.model(self.spec)
            remote.ensure_loaded()
        except WorkerError as exc:
            self.bench.load_errors[self.spec] = f"{self.spec}: {exc}"
            pytest.fail(self.bench.load_errors[self.spec], pytrace=False)
        self.bench.load_times[self.spec] = remote.load_time_s
        self.loaded = worker_model(self.spec, remote, "ab")
        paths = {side: side_file(self.item, self.bench, side) for side in SIDES}
        if not paths["base"].exists():
            self._missing(f"{paths['base'].name} does not exist at the base")
        try:
            failure = self._converse(paths)
        except WorkerError as exc:
            failure = f"mlxvlm: {self.spec} {nodeid(self.item)}: {exc}"
        finally:
            if not self.ended:  # a worker still inside this test would read the next one's requests
                remote.stop()  # both start afresh for the next test
        if failure:
            pytest.fail(failure, pytrace=False)

    def _missing(self, why: str) -> None:
        message = f"mlxvlm: A/B: {nodeid(self.item)}: {why} (a test the head adds): nothing to compare"
        if self.settings.gate.missing == "fail":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    def _converse(self, paths: dict[str, Path]) -> str | None:
        """Both sides run the test; each pair of workloads is measured as one A/B case."""
        assert self.loaded is not None
        workers = self.loaded.ab.workers
        for side in SIDES:
            workers[side].send({"op": "run_test", "args": nested_args(self.item, self.bench, side, paths[side])})
        answers = self._receive(workers)
        while all(answers[side].get("event") == "workload" for side in SIDES):
            sides, failure = self._case(answers)
            if failure:
                self._end(workers, answers, "its A/B case failed")
                return failure
            for side in SIDES:
                workers[side].send({"op": "continue", "result": sides[side].to_dict()})
            answers = self._receive(workers)
        self.ended = not any(answers[side].get("event") == "workload" for side in SIDES)
        if not self.ended:
            waiting = next(side for side in SIDES if answers[side].get("event") == "workload")
            ended = "base" if waiting == "head" else "head"
            done = answers[ended]
            answers = self._end(workers, answers, f"the {ended}'s test ended")
            if done["outcome"] == "not-found":
                self._missing(f"the base has no such test ({done['message']})")
            return self._not_comparable(ended, done, waiting)
        return self._outcome(answers)

    @staticmethod
    def _receive(workers: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Each side's next answer to ``run_test``: a case's workload, or how its test ended (an
        error with the worker's last output, which holds the session's own line)."""
        answers = {side: workers[side].receive("run_test") for side in SIDES}
        for side, answer in answers.items():
            if answer.get("outcome") == "error" and "stopped" in answer.get("message", ""):
                answer["message"] += f"; last output: {workers[side].tail()[-400:]}"
        return answers

    def _end(self, workers: dict[str, Any], answers: dict[str, dict[str, Any]],
             reason: str) -> dict[str, dict[str, Any]]:
        """Stop the tests still waiting for their cases, and read how each ended (a body that
        catches the abort and measures again is told again)."""
        for side in SIDES:
            if answers[side].get("event") == "workload":
                workers[side].send({"op": "abort", "reason": reason})
        for side in SIDES:
            while answers[side].get("event") == "workload":
                answers[side] = workers[side].receive("run_test")
                if answers[side].get("event") == "workload":
                    workers[side].send({"op": "abort", "reason": reason})
        self.ended = True
        return answers

    def _not_comparable(self, ended: str, done: dict[str, Any], waiting: str) -> str:
        if done["outcome"] in ("passed", "aborted"):
            return (f"mlxvlm: A/B workload changed in {nodeid(self.item)}: the {waiting}'s test measures "
                    f"more cases than the {ended}'s (whose test ended after {self.cases_done} case(s))")
        return (f"mlxvlm: A/B not comparable: {nodeid(self.item)}: the {ended}'s test did not reach its "
                f"measurement: {done['outcome']}: {done['message']}")

    def _case(self, answers: dict[str, dict[str, Any]]) -> tuple[dict[str, CaseResult], str | None]:
        """One ``mlx_bench.run()`` of each side, measured in pairs and judged."""
        assert self.loaded is not None
        requests = {side: _request(answers[side]["request"]) for side in SIDES}
        workloads = {side: {**answers[side]["workload"], "per_side": True} for side in SIDES}
        warmup = max(int(workloads[side].get("warmup") or 0) for side in SIDES)
        head = answers["head"]
        sides, failure = run_ab_case(
            self.bench, self.settings, self.loaded, key=head["case_key"], label=head["label"],
            test_id=nodeid(self.item), requests=requests, warmup=warmup, workloads=workloads,
            workload_changes=workload_changes(answers["base"]["request"], head["request"]))
        self.cases_done += 1
        record_ab_case(self.item, self.config, sides)
        return sides, failure

    def _outcome(self, answers: dict[str, dict[str, Any]]) -> str | None:
        """Both tests ended: the test's outcome is the head's (its code is under test)."""
        base, head = answers["base"], answers["head"]
        if base["outcome"] == "not-found" and head["outcome"] != "not-found":
            self._missing(f"the base has no such test ({base['message']})")
        if base["outcome"] not in ("passed", "aborted") and not self.cases_done and head["outcome"] == "passed":
            return (f"mlxvlm: A/B not comparable: {nodeid(self.item)}: the base's test "
                    f"{base['outcome']}: {base['message']}")
        if base["outcome"] == "failed" and self.cases_done:
            self.item.add_report_section("call", "mlxvlm A/B", f"the base's own test failed after "
                                                               f"measuring: {base['message']}")
        if head["outcome"] == "skipped":
            pytest.skip(f"head: {head['message']}")
        if head["outcome"] != "passed":
            return f"mlxvlm: {nodeid(self.item)} (the head's code, in its worker): {head['outcome']}: {head['message']}"
        return None


class SideBySide:
    """pytest plugin under the A/B mode: a per-side test keeps pytest's own protocol (reports,
    capture, JUnit), but its fixtures are not set up here (they run in each side's worker) and
    its call is the conversation with the workers."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if runs_per_side(item, self.config.stash[session_key]):
            item.stash[per_side_key] = True
            item.setup = _fixtures_run_per_side  # type: ignore[method-assign]  # pytest calls it next

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        if not pyfuncitem.stash.get(per_side_key, False):
            return None
        SideBySideTest(pyfuncitem).run()
        return True


def _fixtures_run_per_side() -> None:
    """A per-side test's setup here: none (its fixtures are set up in each side's worker)."""
