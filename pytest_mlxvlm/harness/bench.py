"""The ``mlx_bench`` fixture's object: measure a case, record it, and hold it to its baseline."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from ..common.stats import per_comparison_alpha
from ..config.settings import Resolution, Settings, SettingsError
from ..gate import decision as gate
from ..gate import work as work_gate
from ..gate.abmode import judge_pairs, run_pairs
from ..gate.baselines import BaselineError
from ..gate.paired import format_change
from ..gate.power import undecidable_note
from ..measure.images import ImageError, image_file
from ..measure.isolation import request_message
from ..measure.runner import CaseError, GenerationLengthError, TooLargeError, run_adaptive, run_case
from ..measure.work import WorkProfileUnavailable
from ..measure.workers import WorkerError
from ..reports.abreport import settle_text
from ..results import METRICS, CaseResult, GenerationRequest, Sample
from .options import benchmark_requested
from .session import BenchSession, session_key, side_key
from .terminal import duration, status
from .xdist import is_worker, nodeid

results_key = pytest.StashKey[list]()  # on an item: the cases its test measured

_THIS_TEST = object()


class MlxStaleBaselineWarning(pytest.PytestWarning):
    """A metric improved well beyond its tolerance: the stored baseline is out of date."""


class MlxGatePowerWarning(pytest.PytestWarning):
    """The gate cannot decide a case: its samples are too few to ever be significant."""


def describe_image(image: Any, default: str) -> str:
    """The image of a workload, as baselines record it: a path, a PIL image's size, or none."""
    if image is _THIS_TEST:
        return default
    if image is None:
        return "none"
    if isinstance(image, (list, tuple)):
        return ", ".join(describe_image(i, default) for i in image)
    if isinstance(image, (str, Path)):
        return str(image)
    size = getattr(image, "size", None)
    return f"PIL image {size[0]}x{size[1]}" if size else type(image).__name__


class MlxBench:
    """Runs measured generations for one test and records them for the reports."""

    side = ""  # CaseResult.side of the cases it records (a subclass's own section: "video", "batch")

    def __init__(self, request: pytest.FixtureRequest, model: Any, resolution: Resolution,
                 image: Path, settings: Settings) -> None:
        self.request = request
        self.model = model
        self.resolution = resolution
        self.image = image
        self.settings = settings
        self.results: list[CaseResult] = []
        self.extra_workload: dict[str, Any] = {}  # what a subclass adds to each case's workload

    @property
    def session(self) -> BenchSession:
        return self.request.config.stash[session_key]

    def run(
        self,
        image: Any = _THIS_TEST,
        prompt: str | None = None,
        *,
        max_tokens: int | None = None,
        rounds: int | None = None,
        warmup: int | None = None,
        **generate_kwargs: Any,
    ) -> CaseResult:
        """Warm up, then measure ``rounds`` generations of this test's image.

        ``image`` replaces the image (a path or PIL image; None for a text-only prompt);
        the other keywords replace the session's settings; further keywords go to
        ``mlx_vlm.stream_generate`` (e.g. ``prompt_cache_state``).
        """
        work = self.settings.workload
        request = self.make_request(
            image=self.image if image is _THIS_TEST else image,
            prompt=work.prompt if prompt is None else prompt,
            max_tokens=work.max_tokens if max_tokens is None else max_tokens,
            generate_kwargs=generate_kwargs,
        )
        n_rounds = work.rounds if rounds is None else rounds
        n_warmup = work.warmup if warmup is None else warmup
        workload = {**work.describe(), "prompt": request.prompt, "max_tokens": request.max_tokens,
                    "rounds": n_rounds, "warmup": n_warmup,
                    "image": describe_image(image, work.describe()["image"]), **self.extra_workload}
        side = self.request.config.stash.get(side_key, None)
        if side is not None:  # this is one side's worker of an A/B run: the parent measures
            return self._run_side(side, request, n_rounds, n_warmup, workload)
        if getattr(self.model, "ab", None) is not None:
            return self._run_ab(request, n_warmup, workload)
        hook = self.request.config.hook
        if getattr(self.model, "isolated", None) is not None:
            request = self._with_image_file(request)

        def measure() -> Sample:
            return self.measure_request(request)

        recorded: dict[str, Any] = {}

        def profile() -> Sample:
            sample, recorded["work"], recorded["why"] = self.record_work(request)
            return sample

        profiled = profile if self.settings.gate.work != "off" else None
        try:
            if work.adaptive and rounds is None:
                samples, warm, reached = run_adaptive(
                    measure, warmup=n_warmup, min_rounds=work.rounds, max_rounds=work.max_rounds,
                    budget_s=work.case_budget_s, target=work.precision, profile=profiled)
                n_rounds = len(samples)
                workload.update(rounds=n_rounds, adaptive=reached)
            else:
                samples, warm = self._measure(measure, n_rounds, n_warmup, profiled)
        except (TooLargeError, GenerationLengthError, WorkerError, CaseError) as exc:
            error = f"mlxvlm: {self.model.spec} {self.label(request)}: {exc}"
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        session = self.session
        result = CaseResult(
            model=self.model.spec,
            resolution=self.label(request),
            samples=samples,
            warmup=warm,
            workload=workload,
            load_time_s=session.load_times.get(self.model.spec, 0.0),
            test_id=nodeid(self.request.node),
            case_key=self._case_key(),
            side=self.side,
            work=recorded.get("work"),
        )
        result.bandwidth = session.decode_limit(self.model, result)
        self.results.append(result)
        self.request.node.stash.setdefault(results_key, []).append(result)
        try:
            self._gate(result, lambda: run_case(measure, rounds=n_rounds, warmup=0)[0], recorded.get("why", ""))
        finally:
            hook.pytest_mlxvlm_case_finished(config=self.request.config, result=result)
        return result

    def make_request(self, **fields: Any) -> GenerationRequest:
        """The generation a round measures (a subclass adds its clip or batch)."""
        return GenerationRequest(**fields)

    def label(self, request: GenerationRequest) -> str:
        """The case's name in tables: its resolution, or ``text`` without an image."""
        return self.resolution.id if request.image is not None else "text"

    def measure_request(self, request: GenerationRequest) -> Sample:
        """One measured generation: in the isolated worker, or through the measure hook."""
        isolated = getattr(self.model, "isolated", None)
        if isolated is not None:
            return isolated.measure(request)
        return self.request.config.hook.pytest_mlxvlm_measure(model=self.model, request=request)

    def record_work(self, request: GenerationRequest) -> tuple[Sample, dict[str, Any] | None, str]:
        """One untimed generation under the work recorder: (its sample, the profile data or None,
        why there is none). A worker's or an engine's missing recorder is reported, not raised."""
        isolated = getattr(self.model, "isolated", None)
        try:
            if isolated is not None:
                sample, data = isolated.work(request)
                return sample, data, ""
            found = self.request.config.hook.pytest_mlxvlm_work_profile(model=self.model, request=request)
        except WorkProfileUnavailable as exc:
            return self.measure_request(request), None, str(exc)
        except WorkerError as exc:
            if "work profile unavailable" not in str(exc):
                raise
            return self.measure_request(request), None, str(exc).partition("work profile unavailable: ")[2]
        if found is None:
            return self.measure_request(request), None, "the engine that measures this model records no work profile"
        return found[0], found[1], ""

    def _with_image_file(self, request: GenerationRequest) -> GenerationRequest:
        """A worker reads images from files: a PIL image is saved first."""
        if request.image is None or isinstance(request.image, (str, Path)):
            return request
        path = Path(self.request.config._tmp_path_factory.mktemp("mlxvlm-worker-images")) / "image.png"  # type: ignore[attr-defined]
        request.image.save(path)
        return dataclasses.replace(request, image=path)  # its keywords for stream_generate kept

    def _run_ab(self, request: GenerationRequest, warmup: int, workload: dict) -> CaseResult:
        """Base and head side by side in their workers, pair by pair; fail on a regression.
        The workload is this process's (a built-in suite's, the same code for both sides)."""
        request = self._with_image_file(request)
        label = self.resolution.id if request.image is not None else "text"
        try:
            sides, failure = run_ab_case(
                self.session, self.settings, self.model, key=self._case_key(), label=label,
                test_id=nodeid(self.request.node), requests={"base": request, "head": request},
                warmup=warmup, workloads={"base": workload, "head": workload})
        except WorkerError as exc:
            error = f"mlxvlm: {self.model.spec} {self.resolution.id}: {exc}"
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        head = sides["head"]
        self.results.append(head)
        record_ab_case(self.request.node, self.request.config, sides)
        if failure:
            pytest.fail(failure, pytrace=False)
        return head

    def _run_side(self, side: Any, request: GenerationRequest, rounds: int, warmup: int,
                  workload: dict) -> CaseResult:
        """In a side's worker: hand this side's workload to the A/B session, which measures it
        paired with the other side's, and return this side's measured case."""
        if request.video is not None or isinstance(request.image, (list, tuple)):
            pytest.fail(f"mlxvlm: {nodeid(self.request.node)}: a clip or several images per request "
                        "cannot be measured per side in the A/B mode yet", pytrace=False)
        request = self._with_image_file(request)
        message = request_message(request)
        message.pop("op")
        key = self._case_key()
        answer = side.workload(message, {**workload, "rounds": rounds, "warmup": warmup},
                               case_key=key, label=self.label(request))
        result = CaseResult.from_dict(answer)
        self.results.append(result)
        return result

    def _measure(self, measure: Callable[[], Sample], rounds: int, warmup: int,
                 profile: Callable[[], Sample] | None = None) -> tuple[list[Sample], list[Sample]]:
        """Warmup and measured rounds, the work profile recorded in the last warmup round (or one
        more round without warmup); through pytest-benchmark when it is active."""
        benchmark = self._pytest_benchmark()
        if benchmark is None:
            return run_case(measure, rounds=rounds, warmup=warmup, profile=profile)
        if profile is not None and not warmup:
            profile()
        collected: list[Sample] = []

        def one() -> None:
            last_warmup = profile is not None and len(collected) == warmup - 1
            collected.append(profile() if last_warmup and profile is not None else measure())

        benchmark.group = self.model.spec
        benchmark.pedantic(one, rounds=rounds, warmup_rounds=warmup, iterations=1)
        samples = collected[warmup:]
        medians = CaseResult(model="", resolution="", samples=samples)
        benchmark.extra_info.update({f"mlxvlm_{m}": medians.summary(m).median for m in METRICS})
        return samples, collected[:warmup]

    def _case_key(self) -> str:
        """The test's module, name and parameters without the model: its baseline's key.

        ``pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]``: the
        module's import name keeps the key the same wherever the tests live on disk.
        """
        node = self.request.node
        module = getattr(getattr(node, "module", None), "__name__", None)
        path_part, _, rest = nodeid(node).partition("::")
        name, _, params = rest.partition("[")
        params = params.rstrip("]")
        model_id = self.session.model_ids.get(self.model.spec, "")
        if model_id and params.startswith(model_id):
            params = params[len(model_id):].lstrip("-")
        elif model_id:
            params = params.replace(f"-{model_id}", "", 1)
        key = f"{module or path_part}::{name}" + (f"[{params}]" if params else "")
        if self.results:
            key += f"#{len(self.results) + 1}"
        return key

    def _gate(self, result: CaseResult, remeasure: Callable[[], list[Sample]], work_unavailable: str = "") -> None:
        """Compare with the stored baseline (timing, and work exactly); fail, skip or warn as the
        settings say."""
        session = self.session
        policy = self.settings.gate
        try:
            stored_file = session.baselines.get(self.model.spec)
        except BaselineError as exc:
            error = str(exc)
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        stored = stored_file.cases.get(result.case_key) if stored_file else None
        reference = stored_file.reference if stored_file and stored_file.kind == "reference" else None
        weak = None if policy.strict else gate.ungated_reason(
            stored, reference=reference is not None, min_sessions=policy.min_sessions)
        comparison = gate.check(
            result,
            result.case_key,
            stored,
            tolerances=policy.tolerances,
            alpha=policy.alpha,
            drift_alpha=session.drift_alpha(policy.tolerances),
            libraries=session.libraries,
            reference=reference,
            remeasure=remeasure if policy.confirm and not policy.update and not weak else None,
        )
        result.comparison = comparison
        if weak and comparison.status in ("pass", "regressed", "improved", "undecidable"):
            comparison.gated = False
            comparison.note = "; ".join(filter(None, [comparison.note, f"not gated: {weak}"]))
            if comparison.status == "regressed":
                changes = ", ".join(f"{METRICS[m.metric].label} {m.change * 100:+.1f}%"
                                    for m in comparison.regressed)
                session.ungated.append(f"{result.case_key}: {changes}, not gated: {weak}")
        path = stored_file.path if stored_file else session.baselines.path(self.model.spec)
        if policy.work != "off":
            result.work_check = work_gate.check(result.work, stored.work if stored else None, against="baseline",
                                                gated=policy.work == "gate", unavailable=work_unavailable)
            self._note_work(result)
        if policy.update:
            return
        work_lines = self._work_failure(result, f"against {path}")
        if work_lines and not (comparison.status == "workload-changed"
                               or (comparison.status == "regressed" and comparison.gated)):
            node = self.request.node
            selector = node.callspec.id if hasattr(node, "callspec") else node.name
            command = gate.update_command(self.request.config.invocation_params.args, selector)
            pytest.fail("\n".join([*work_lines, f"  if the change is intended, record the new work: {command}"]),
                        pytrace=False)
        if comparison.status == "undecidable":
            self._undecidable(result, comparison, str(path))
            return
        if comparison.status == "new":
            message = f"no baseline for {result.case_key} in {path}"
            if policy.missing == "fail":
                pytest.fail(f"mlxvlm: {message}; create it with --mlx-update-baselines=new",
                            pytrace=False)
            if policy.missing == "skip":
                pytest.skip(f"mlxvlm: {message}")
            return
        if comparison.status == "workload-changed" or (comparison.status == "regressed" and comparison.gated):
            node = self.request.node
            selector = node.callspec.id if hasattr(node, "callspec") else node.name
            command = gate.update_command(self.request.config.invocation_params.args, selector)
            pytest.fail(
                "\n".join([gate.failure_message(comparison, model=self.model.spec, chip=session.machine["key"],
                                                baseline_path=str(path), command=command), *work_lines]),
                pytrace=False,
            )
        stale = policy.stale
        improved = [m for m in comparison.metrics if stale is not None and -m.worse_by > stale]
        if improved:
            changes = ", ".join(f"{METRICS[m.metric].label} {m.change * 100:+.1f}%" for m in improved)
            warnings.warn(MlxStaleBaselineWarning(
                f"{result.case_key} improved beyond {stale * 100:.0f}%: {changes}; the baseline "
                f"in {path} is stale, refresh it with --mlx-update-baselines"
            ))

    def _note_work(self, result: CaseResult) -> None:
        note_work(self.request.node, result)

    def _work_failure(self, result: CaseResult, where: str) -> list[str]:
        return work_failure(result, f"{self.model.spec} on {self.session.machine['key']}",
                            self.settings.gate.outputs, where)

    def _undecidable(self, result: CaseResult, comparison: Any, path: str) -> None:
        """Too few samples for the gate to ever decide: a gating baseline fails the test (it
        promises a gate that cannot work); a weak one, which never fails a test, warns."""
        metrics = [m for m in comparison.metrics if m.verdict == "undecidable"]
        note = undecidable_note(metrics, self.settings.gate.alpha)
        comparison.note = "; ".join(filter(None, [comparison.note, note]))
        message = f"mlxvlm: the gate cannot decide {result.case_key} ({self.model.spec}, baseline {path}): {note}"
        if comparison.gated:
            pytest.fail(message, pytrace=False)
        warnings.warn(MlxGatePowerWarning(message))

    def _pytest_benchmark(self) -> Any:
        """pytest-benchmark's fixture, when the user asked for it (``--mlx-pytest-benchmark``
        or a ``--benchmark-*`` option) and that plugin is active and enabled for this test.

        Not on pytest-xdist workers: pytest-benchmark disables itself there, and a disabled
        fixture that was requested warns that it was never used."""
        config = self.request.config
        if self.results or is_worker(config) or not config.pluginmanager.has_plugin("benchmark"):
            return None
        if not benchmark_requested(config):
            return None  # its table and .benchmarks/ only when asked for
        try:
            benchmark = self.request.getfixturevalue("benchmark")
        except pytest.FixtureLookupError:
            return None
        return None if getattr(benchmark, "disabled", True) else benchmark


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
    comparison.note = "; ".join(filter(None, [comparison.note, how]))
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


def marker_settings(node: Any, base: Settings) -> Settings:
    """The settings of a test: the session's, amended by its ``mlx_benchmark`` marker."""
    marker = node.get_closest_marker("mlx_benchmark")
    if marker is None:
        return base
    try:
        if marker.args:
            raise SettingsError("the mlx_benchmark marker takes keyword arguments only")
        return base.for_marker(**marker.kwargs)
    except SettingsError as exc:
        error = f"{node.nodeid}: {exc}"
    pytest.fail(error, pytrace=False)


def image_or_fail(resolution: Resolution, directory: Path, source: Path | None) -> Path:
    """The image file of a resolution; an image that cannot be opened fails the test in one line."""
    try:
        return image_file(resolution, directory, source)
    except ImageError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)
