"""The ``mlx_bench`` fixture's object: measure a case, record it, and hold it to its baseline."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from ..config.settings import Resolution, Settings, SettingsError, positive_int
from ..gate import decision as gate
from ..gate import work as work_gate
from ..gate.baselines import BaselineError
from ..gate.power import undecidable_note
from ..measure.images import ImageError, image_file, open_image
from ..measure.isolation import request_message
from ..measure.runner import CaseError, GenerationLengthError, TooLargeError, run_adaptive, run_case
from ..measure.work import WorkProfileUnavailable
from ..measure.workers import WorkerError
from ..results import METRICS, CaseResult, GenerationRequest, Sample
from .options import benchmark_requested
from .abcase import note_work, record_ab_case, run_ab_case, work_failure
from .session import BenchSession, results_key, session_key, side_key
from .xdist import is_worker, nodeid


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

    def _checked(self, image: Any, max_tokens: Any, rounds: Any,
                 warmup: Any) -> tuple[int | None, int | None, int | None]:
        """``run``'s counts as whole numbers in range, and its image file readable; a bad one
        fails the test in one line, as the marker's keywords do."""
        try:
            counts = (None if max_tokens is None else positive_int("max_tokens", max_tokens),
                      None if rounds is None else positive_int("rounds", rounds),
                      None if warmup is None else positive_int("warmup", warmup, minimum=0))
            if isinstance(image, (str, Path)) and not str(image).startswith(("http://", "https://")):
                open_image(Path(image))
            return counts
        except (SettingsError, ImageError) as exc:
            error = f"{self.request.node.nodeid}: {type(self).__name__}.run(): {exc}"
        pytest.fail(error, pytrace=False)

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
        max_tokens, rounds, warmup = self._checked(image, max_tokens, rounds, warmup)
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
                    "image": describe_image(None if image is _THIS_TEST and self.image is None else image,
                                            work.describe()["image"]), **self.extra_workload}
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
        """A worker reads images from files: a PIL image (or each of a list) is saved first."""
        images = request.images
        if all(i is None or isinstance(i, (str, Path)) for i in images):
            return request
        folder = Path(self.request.config._tmp_path_factory.mktemp("mlxvlm-worker-images"))  # type: ignore[attr-defined]
        paths: list[Any] = []
        for n, image in enumerate(images):
            if not isinstance(image, (str, Path)):
                image.save(folder / f"image-{n}.png")
                image = folder / f"image-{n}.png"
            paths.append(image)
        saved = paths if isinstance(request.image, (list, tuple)) else paths[0]
        return dataclasses.replace(request, image=saved)  # its keywords for stream_generate kept

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
        samples = collected[warmup:warmup + rounds]  # not the extra call --benchmark-cprofile makes
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
