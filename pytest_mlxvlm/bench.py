"""The ``mlx_bench`` fixture's object: measure a case, record it, and hold it to its baseline."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from . import gate
from .abmode import judge_pairs, run_pairs
from .baselines import BaselineError
from .paired import format_change
from .results import METRICS, CaseResult, GenerationRequest, Sample
from .runner import CaseError, GenerationLengthError, TooLargeError, run_adaptive, run_case
from .stats import per_comparison_alpha
from .workers import WorkerError
from .session import BenchSession, session_key
from .images import ImageError, image_file
from .settings import Resolution, Settings, SettingsError
from .xdist import is_worker, nodeid

results_key = pytest.StashKey[list]()  # on an item: the cases its test measured

_THIS_TEST = object()


class MlxStaleBaselineWarning(pytest.PytestWarning):
    """A metric improved well beyond its tolerance: the stored baseline is out of date."""


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
        if getattr(self.model, "ab", None) is not None:
            return self._run_ab(request, n_warmup, workload)
        hook = self.request.config.hook
        if getattr(self.model, "isolated", None) is not None:
            request = self._with_image_file(request)

        def measure() -> Sample:
            return self.measure_request(request)

        try:
            if work.adaptive and rounds is None:
                samples, warm, reached = run_adaptive(
                    measure, warmup=n_warmup, min_rounds=work.rounds, max_rounds=work.max_rounds,
                    budget_s=work.case_budget_s, target=work.precision)
                n_rounds = len(samples)
                workload.update(rounds=n_rounds, adaptive=reached)
            else:
                samples, warm = self._measure(measure, n_rounds, n_warmup)
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
        )
        result.bandwidth = session.decode_limit(self.model, result)
        self.results.append(result)
        self.request.node.stash.setdefault(results_key, []).append(result)
        try:
            self._gate(result, lambda: run_case(measure, rounds=n_rounds, warmup=0)[0])
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

    def _with_image_file(self, request: GenerationRequest) -> GenerationRequest:
        """A worker reads images from files: a PIL image is saved first."""
        if request.image is None or isinstance(request.image, (str, Path)):
            return request
        path = Path(self.request.config._tmp_path_factory.mktemp("mlxvlm-worker-images")) / "image.png"  # type: ignore[attr-defined]
        request.image.save(path)
        return GenerationRequest(image=path, prompt=request.prompt, max_tokens=request.max_tokens)

    def _run_ab(self, request: GenerationRequest, warmup: int, workload: dict) -> CaseResult:
        """Base and head side by side in their workers, pair by pair; fail on a regression."""
        request = self._with_image_file(request)
        session = self.session
        plan, policy = self.settings.ab, self.settings.gate
        key = self._case_key()
        alpha = per_comparison_alpha(policy.alpha, max(1, session.measured_total) * len(policy.ab_tolerances))

        def judge(base: list[Sample], head: list[Sample]) -> Any:
            return judge_pairs(key, base, head, tolerances=policy.ab_tolerances, alpha=alpha,
                               method=plan.estimator)

        ab_model = self.model.ab
        try:
            ab_model.ensure_loaded()
            run = run_pairs(ab_model.measure, request, warmup=warmup, plan=plan, judge=judge,
                            measure_both=ab_model.measure_both_at_once(plan.order))
        except WorkerError as exc:
            error = f"mlxvlm: {self.model.spec} {self.resolution.id}: {exc}"
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        comparison = judge(run.base, run.head)
        how = (f"{len(run.head)} pairs ({plan.order}) in {run.seconds:.0f} s, stopped: {run.stopped}; "
               f"base {session.ab.base.label}, head {session.ab.head.label}")
        comparison.note = "; ".join(filter(None, [comparison.note, how]))
        sides = {}
        for side, samples, warm in (("base", run.base, run.base_warmup), ("head", run.head, run.head_warmup)):
            sides[side] = CaseResult(
                model=self.model.spec, resolution=self.resolution.id if request.image is not None else "text",
                samples=samples, warmup=warm,
                workload={**workload, "rounds": len(samples), "pairs": len(samples)},
                load_time_s=ab_model.load_times.get(side, 0.0), test_id=nodeid(self.request.node),
                case_key=key, side=side, comparison=comparison if side == "head" else None,
            )
            sides[side].bandwidth = session.decode_limit(self.model, sides[side])
        head = sides["head"]
        self.results.append(head)
        self.request.node.stash.setdefault(results_key, []).extend([sides["base"], head])
        self.request.config.hook.pytest_mlxvlm_case_finished(config=self.request.config, result=head)
        if comparison.status in ("regressed", "workload-changed"):
            lines = [f"mlxvlm: A/B {comparison.status} in {key} ({self.model.spec} on "
                     f"{session.machine['key']}): base {session.ab.base.label}, head {session.ab.head.label}"]
            if comparison.status == "workload-changed":
                lines += [f"  {k}: base {a}, head {b}" for k, (a, b) in comparison.workload_changes.items()]
            lines += [f"  {format_change(m)} (tolerance {m.tolerance * 100:.0f}%)" for m in comparison.regressed]
            lines.append(f"  {comparison.note}")
            pytest.fail("\n".join(lines), pytrace=False)
        return head

    def _measure(self, measure: Callable[[], Sample], rounds: int, warmup: int
                 ) -> tuple[list[Sample], list[Sample]]:
        """Warmup and measured rounds; through pytest-benchmark when it is active."""
        benchmark = self._pytest_benchmark()
        if benchmark is None:
            return run_case(measure, rounds=rounds, warmup=warmup)
        collected: list[Sample] = []
        benchmark.group = self.model.spec
        benchmark.pedantic(lambda: collected.append(measure()), rounds=rounds,
                           warmup_rounds=warmup, iterations=1)
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

    def _gate(self, result: CaseResult, remeasure: Callable[[], list[Sample]]) -> None:
        """Compare with the stored baseline; fail, skip or warn as the settings say."""
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
        if weak and comparison.status in ("pass", "regressed", "improved"):
            comparison.gated = False
            comparison.note = "; ".join(filter(None, [comparison.note, f"not gated: {weak}"]))
            if comparison.status == "regressed":
                changes = ", ".join(f"{m.metric} {m.change * 100:+.1f}%" for m in comparison.regressed)
                session.ungated.append(f"{result.case_key}: {changes}, not gated: {weak}")
        path = stored_file.path if stored_file else session.baselines.path(self.model.spec)
        if policy.update:
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
                gate.failure_message(comparison, model=self.model.spec, chip=session.machine["key"],
                                     baseline_path=str(path), command=command),
                pytrace=False,
            )
        stale = policy.stale
        improved = [m for m in comparison.metrics if stale is not None and -m.worse_by > stale]
        if improved:
            changes = ", ".join(f"{m.metric} {m.change * 100:+.1f}%" for m in improved)
            warnings.warn(MlxStaleBaselineWarning(
                f"{result.case_key} improved beyond {stale * 100:.0f}%: {changes}; the baseline "
                f"in {path} is stale, refresh it with --mlx-update-baselines"
            ))

    def _pytest_benchmark(self) -> Any:
        """pytest-benchmark's fixture, when that plugin is active and enabled for this test.

        Not on pytest-xdist workers: pytest-benchmark disables itself there, and a disabled
        fixture that was requested warns that it was never used."""
        config = self.request.config
        if self.results or is_worker(config) or not config.pluginmanager.has_plugin("benchmark"):
            return None
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
