"""pytest glue: options, fixtures, parametrization, the built-in suite and the reporter."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from . import hookspec
from .settings import Resolution, Settings, SettingsError, resolve

SUITE_DIR = Path(__file__).with_name("builtin")
SUITE_FILES = {"images": SUITE_DIR / "test_mlxvlm_images.py", "cache": SUITE_DIR / "test_mlxvlm_cache.py"}

settings_key = pytest.StashKey["Settings"]()
session_key = pytest.StashKey["BenchSession"]()
results_key = pytest.StashKey[list]()
phase_key = pytest.StashKey[dict]()
engines_key = pytest.StashKey[dict]()
expect_key = pytest.StashKey[dict]()
cache_key = pytest.StashKey[list]()


# -- options ---------------------------------------------------------------------------------

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlxvlm", "VLM inference benchmarks on MLX (pytest-mlxvlm)")
    gate = parser.getgroup("mlxvlm-baselines", "pytest-mlxvlm baselines and regression gate")

    def mirrored(to: Any, flag: str, ini: str, help: str, *, ini_type: str = "string",
                 **kw: Any) -> None:
        """An option of group ``to`` and the ini setting of the same name."""
        to.addoption(flag, dest=ini, help=f"{help} [ini: {ini}]", **kw)
        parser.addini(ini, help.replace("%%", "%"), type=ini_type)  # type: ignore[arg-type]

    def option(flag: str, ini: str, help: str, **kw: Any) -> None:
        mirrored(group, flag, ini, help, **kw)

    def gate_option(flag: str, ini: str, help: str, **kw: Any) -> None:
        mirrored(gate, flag, ini, help, **kw)

    option(
        "--mlx-model",
        "mlx_model",
        "model to benchmark: Hugging Face id, local path or synthetic:<name> "
        "(repeatable; default synthetic:tiny)",
        ini_type="linelist",
        action="append",
        default=None,
        metavar="MODEL",
    )
    option(
        "--quick",
        "mlx_quick",
        "quick sweep 224², 448², 768², 1024² instead of the full ten sizes",
        ini_type="bool",
        action="store_true",
        default=None,
    )
    option(
        "--mlx-resolutions",
        "mlx_resolutions",
        "image sizes to sweep, e.g. 448x448,1920x1080 (overrides --quick)",
        default=None,
        metavar="WxH,...",
    )
    option("--mlx-max-tokens", "mlx_max_tokens", "fixed output length (default 64)",
           default=None, metavar="N")
    option("--mlx-rounds", "mlx_rounds", "measured rounds per case (default 5)",
           default=None, metavar="N")
    option("--mlx-warmup", "mlx_warmup", "unmeasured warmup runs per case (default 1)",
           default=None, metavar="N")
    option("--mlx-prompt", "mlx_prompt", "prompt sent with each image", default=None,
           metavar="TEXT")
    option("--mlx-image", "mlx_image",
           "your own image, resized to each resolution (default: a synthetic pattern)",
           default=None, metavar="PATH")
    option("--mlx-json", "mlx_json", "write every sample, the settings and the machine to PATH",
           default=None, metavar="PATH")
    option("--mlx-history", "mlx_history",
           "append this session's results (commit, branch, date, machine, settings, every "
           "sample) as one line to a history file", default=None, metavar="PATH")
    option("--mlx-chip", "mlx_chip",
           "override the chip key of this machine (also $PYTEST_MLXVLM_CHIP)",
           default=None, metavar="KEY")
    option("--mlx-bandwidth", "mlx_bandwidth",
           "memory bandwidth of this machine in GB/s, for the '%% of BW limit' column "
           "(default: the published figure of a known Apple or NVIDIA chip)",
           default=None, metavar="GBPS")
    option("--mlx-suite", "mlx_suite",
           "built-in suites to run: auto (the image benchmark when --mlx-model is given), "
           "images, cache, all (images,cache) or off", default=None, metavar="SUITES")

    option("--mlx-cache-engine", "mlx_cache_engine",
           "prefix-cache engines for the cache suite: apc, prompt-cache, vllm-mlx, your own "
           "(hook), or all available (default); repeatable", ini_type="linelist",
           action="append", default=None, metavar="NAME")
    parser.addini("mlx_cache_expect",
                  "override expected cache outcomes: lines 'ENGINE: STEP = HIT|PARTIAL|MISS'",
                  type="linelist")

    gate_option("--mlx-baseline-dir", "mlx_baseline_dir",
                "where baselines live, one folder per chip (default: baselines/ in the rootdir)",
                default=None, metavar="DIR")
    gate.addoption(
        "--mlx-update-baselines", dest="mlx_update_baselines", nargs="?", const="all",
        default=None, choices=("all", "new", "add"), metavar="all|new|add",
        help="write the results of passing tests as baselines once the whole session passed: "
        "'all' replaces, 'new' writes only cases that have none, 'add' appends this session "
        "(repeat it to give the gate the session-to-session drift of this machine)",
    )
    gate_option("--mlx-missing-baseline", "mlx_missing_baseline",
                "a case without a baseline: warn (default), fail or skip",
                default=None, choices=("warn", "fail", "skip"))
    gate_option("--mlx-tolerance", "mlx_tolerance",
                "tolerance per metric in percent, e.g. ttft_s=20 or peak_memory=off (repeatable); "
                "defaults: end_to_end_tps=10 generation_tps=10 ttft_s=15 peak_memory=5",
                ini_type="linelist", action="append", default=None, metavar="METRIC=PCT")
    gate_option("--mlx-alpha", "mlx_alpha",
                "significance level of the gate (default 0.05): each metric's Mann-Whitney test "
                "is judged at P, and the baseline's drift allowance at P / (measured tests x "
                "gated metrics), so a session of unchanged code fails on drift with chance <= P",
                default=None, metavar="P")
    gate.addoption("--mlx-no-confirm", dest="mlx_no_confirm", action="store_true", default=False,
                   help="fail on the first measurement instead of measuring a regressed case again")
    gate_option("--mlx-stale-threshold", "mlx_stale_threshold",
                "warn that a baseline is stale when a metric improved by more than PCT percent",
                default=None, metavar="PCT")
    gate_option("--mlx-markdown", "mlx_markdown",
                "write a pull-request comment (Markdown) to PATH; also appended to "
                "$GITHUB_STEP_SUMMARY when set", default=None, metavar="PATH")


def _ini(config: pytest.Config, name: str) -> Any:
    value = config.getini(name)
    return value if value not in ("", [], None) else None


def _settings_from_config(config: pytest.Config) -> Settings:
    opt = config.option
    def pick(name: str) -> Any:
        value = getattr(opt, name, None)
        return value if value is not None else _ini(config, name)
    return resolve(
        models=opt.mlx_model,
        ini_models=_ini(config, "mlx_model"),
        quick=opt.mlx_quick,
        ini_quick=bool(config.getini("mlx_quick")),
        resolutions=opt.mlx_resolutions,
        ini_resolutions=_ini(config, "mlx_resolutions"),
        max_tokens=pick("mlx_max_tokens"),
        rounds=pick("mlx_rounds"),
        warmup=pick("mlx_warmup"),
        prompt=pick("mlx_prompt"),
        image=pick("mlx_image"),
        json_path=pick("mlx_json"),
        chip=pick("mlx_chip"),
        suite=pick("mlx_suite") or "auto",
        base_dir=config.invocation_params.dir,
        rootdir=config.rootpath,
        baseline_dir=pick("mlx_baseline_dir"),
        update=opt.mlx_update_baselines,
        missing=pick("mlx_missing_baseline"),
        tolerances=opt.mlx_tolerance or _ini(config, "mlx_tolerance"),
        alpha=pick("mlx_alpha"),
        confirm=not opt.mlx_no_confirm,
        stale=pick("mlx_stale_threshold"),
        markdown_path=pick("mlx_markdown"),
        history_path=pick("mlx_history"),
        bandwidth=pick("mlx_bandwidth"),
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mlx_benchmark(rounds=None, max_tokens=None, warmup=None, resolutions=None, prompt=None): "
        "per-test settings for pytest-mlxvlm measurements",
    )
    try:
        settings = _settings_from_config(config)
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None
    config.stash[settings_key] = settings
    config.stash[session_key] = BenchSession(config, settings)
    try:
        config.stash[engines_key] = _cache_engines(config)
        config.stash[expect_key] = _cache_expectations(config)
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None
    if settings.suites and str(SUITE_DIR) not in config.args:
        config.args.append(str(SUITE_DIR))  # unselected suites are ignored at collection
    if not _is_worker(config) and getattr(config.option, "numprocesses", None):
        # Measured tests share one worker (an xdist group) so that they never run beside
        # each other; --dist load, xdist's default, becomes loadgroup for that when this
        # session measures (a model named, or a built-in suite), so that other projects'
        # xdist runs keep their scheduling (measured tests stay serialised by a lock anyway).
        measuring = bool(config.option.mlx_model or _ini(config, "mlx_model") or settings.suites)
        if measuring and getattr(config.option, "dist", None) == "load":
            config.option.dist = "loadgroup"
    if not _is_worker(config):
        reporter = MlxReporter(config)
        config.pluginmanager.register(reporter, "mlxvlm-reporter")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect only the selected built-in suites (unless one was named on the command line)."""
    for name, path in SUITE_FILES.items():
        if collection_path == path and name not in config.stash[settings_key].suites:
            named = any(path.stem in str(arg) for arg in config.invocation_params.args)
            return None if named else True
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("mlxvlm-reporter")
    if reporter is not None:
        config.pluginmanager.unregister(reporter)
        _measure_lock().unlink(missing_ok=True)


def _measure_lock() -> Path:
    """The lock file that pytest-xdist workers of this controller measure under."""
    import tempfile

    return Path(tempfile.gettempdir()) / f".pytest-mlxvlm-{os.getpid()}.measure.lock"


# -- default engine ---------------------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_mlxvlm_load_model(spec: str, settings: Settings) -> Any:
    from .models import load

    return load(spec)


@pytest.hookimpl(trylast=True)
def pytest_mlxvlm_measure(model: Any, request: Any) -> Any:
    from .runner import measure_generation

    return measure_generation(model.model, model.processor, request)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """pytest-benchmark's machine info carries the MLX chip identity."""
    machine_info["mlx"] = config.stash[session_key].machine


# -- prefix-cache engines ---------------------------------------------------------------------

def _cache_engines(config: pytest.Config) -> dict[str, Any]:
    """The engines to run the cache suite with: name -> factory."""
    from .cache import VLLM_MLX_INSTALL, builtin_engines

    known: dict[str, Any] = dict(builtin_engines())
    for offered in config.hook.pytest_mlxvlm_cache_engines(config=config):
        known.update(offered or {})
    wanted: list[str] = []
    for entry in config.option.mlx_cache_engine or _ini(config, "mlx_cache_engine") or ["all"]:
        wanted += [w.strip() for w in entry.split(",") if w.strip()]
    if "all" in wanted:
        return known
    chosen = {}
    for name in wanted:
        if name in known:
            chosen[name] = known[name]
        elif name == "vllm-mlx":
            raise ValueError(f"cache engine 'vllm-mlx' needs the vllm_mlx package: {VLLM_MLX_INSTALL}")
        else:
            raise ValueError(f"unknown cache engine {name!r}; choose from {', '.join(sorted(known))} or all")
    return chosen


def _cache_expectations(config: pytest.Config) -> dict[tuple[str, str], str]:
    """``ENGINE: STEP = OUTCOME`` lines of the ``mlx_cache_expect`` ini setting."""
    out = {}
    for line in config.getini("mlx_cache_expect") or []:
        engine, sep, rest = line.partition(":")
        step, sep2, outcome = rest.rpartition("=")
        outcome = outcome.strip().upper()
        if not sep or not sep2 or outcome not in ("HIT", "PARTIAL", "MISS"):
            raise ValueError(f"bad mlx_cache_expect line {line!r}: write 'ENGINE: STEP = HIT|PARTIAL|MISS'")
        out[(engine.strip(), step.strip())] = outcome
    return out


class MlxCache:
    """Runs cache steps through one engine; ``check()`` fails the test with every failed step."""

    def __init__(self, request: pytest.FixtureRequest, session: Any, engine_name: str) -> None:
        self.request = request
        self.session = session
        self.engine = engine_name
        overrides = {step: o for (eng, step), o in request.config.stash[expect_key].items()
                     if eng == engine_name}
        self._overrides = overrides

    def expected(self, step: str, default: str) -> str:
        """The expected outcome of a step: ini and hook overrides over the default semantics."""
        expectations = {step: self._overrides.get(step, default)}
        self.request.config.hook.pytest_mlxvlm_cache_expectations(
            engine=self.engine, expectations=expectations
        )
        return expectations[step]

    def step(self, name: str, image: Any, prompt: str, expect: str, description: str = "") -> Any:
        """One real generation through the engine and a cold one of the same input."""
        return self.session.step(name, image, prompt, self.expected(name, expect), description)

    def run(self, image: Any, prompt: str, name: str | None = None, description: str = "") -> Any:
        """One real generation through the engine: its outcome (HIT, PARTIAL, MISS) and evidence."""
        return self.session.step(name or f"step {len(self.steps) + 1}", image, prompt, None,
                                 description)

    def expect(self, result: Any, outcome: str) -> None:
        """Fail now unless the step had ``outcome`` and answered as a cold run does."""
        from .cache import judge

        if not judge(result, self.expected(result.step, outcome)):
            pytest.fail(result.message(), pytrace=False)

    @property
    def steps(self) -> list[Any]:
        return self.session.steps

    def check(self) -> None:
        failed = self.session.failed
        if failed:
            lines = [f"{len(failed)} of {len(self.steps)} cache steps failed for engine "
                     f"{self.engine!r}:"] + [f"  {s.message()}" for s in failed]
            pytest.fail("\n".join(lines), pytrace=False)


@pytest.fixture
def mlx_cache(request: pytest.FixtureRequest, mlx_model: Any, pytestconfig: pytest.Config) -> Any:
    """A fresh prefix-cache engine on ``mlx_model``: ``step(...)`` then ``check()``, or
    ``expect(run(image, prompt), "HIT")``."""
    from .cache import CacheSession

    name = request.param
    factory = pytestconfig.stash[engines_key][name]
    hook = pytestconfig.hook
    try:
        engine = factory()
        session = CacheSession(
            mlx_model.model, mlx_model.processor, engine,
            measure=lambda req: hook.pytest_mlxvlm_measure(model=mlx_model, request=req),
        )
    except Exception as exc:  # noqa: BLE001 - an engine that cannot start fails its tests
        error = f"cache engine {name!r} could not start: {type(exc).__name__}: {exc}"
    else:
        error = None
    if error:
        pytest.fail(error, pytrace=False)
    cache = MlxCache(request, session, name)
    yield cache
    pytestconfig.stash.setdefault(cache_key, []).append(
        {"test": _nodeid(request.node), "model": mlx_model.spec, "engine": name,
         "steps": list(session.steps)}
    )


@pytest.fixture
def mlx_cache_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A factory of deterministic PNG images: ``mlx_cache_image(side, seed=0)``."""
    from .images import synthetic_image

    directory = tmp_path_factory.getbasetemp() / "mlxvlm-cache-images"
    directory.mkdir(exist_ok=True)

    def make(side: int, seed: int = 0, height: int | None = None) -> Path:
        resolution = Resolution(side, height or side)
        path = directory / f"{resolution.id}-{seed}.png"
        if not path.exists():
            synthetic_image(resolution, seed=seed).save(path)
        return path

    return make


# -- session state ----------------------------------------------------------------------------

@dataclass
class BenchSession:
    """What one pytest session measured."""

    config: pytest.Config
    settings: Settings
    results: list[Any] = field(default_factory=list)
    load_times: dict[str, float] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)
    _machine: dict[str, Any] | None = None
    _baselines: dict[str, Any] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)
    measured_total: int = 0
    finished: int = 0
    started: float = 0.0
    _weight_bytes: dict[str, tuple[int, int]] = field(default_factory=dict)
    baseline_messages: list[str] = field(default_factory=list)
    gate_counts: dict[str, int] = field(default_factory=dict)

    def drift_alpha(self, tolerances: dict[str, float]) -> float:
        """The level of one metric's drift allowance: ``--mlx-alpha`` is the chance that a
        session of unchanged code fails on drift, split over its measured tests x gated metrics."""
        from .compare import per_comparison_alpha

        return per_comparison_alpha(self.settings.alpha, max(1, self.measured_total) * len(tolerances))

    @property
    def bandwidth_gbps(self) -> float | None:
        from .bandwidth import lookup_gbps

        return self.settings.bandwidth or lookup_gbps(self.machine)

    def decode_limit(self, loaded: Any, result: Any) -> dict[str, float] | None:
        """The bandwidth bound of decode for a case, and how close the measurement came."""
        gbps = self.bandwidth_gbps
        if not gbps or getattr(loaded, "model", None) is None or not result.samples:
            return None
        from .bandwidth import decode_limit, decode_weight_bytes, kv_bytes_per_position

        if loaded.spec not in self._weight_bytes:
            self._weight_bytes[loaded.spec] = (
                decode_weight_bytes(loaded.model), kv_bytes_per_position(loaded.model)
            )
        weights, kv = self._weight_bytes[loaded.spec]
        limit = decode_limit(
            gbps, weights, kv,
            int(result.summary("prompt_tokens").median),
            int(result.summary("generation_tokens").median),
        )
        limit["fraction"] = result.summary("generation_tps").median / limit["limit_tps"]
        return limit

    @property
    def libraries(self) -> dict[str, Any]:
        m = self.machine
        return {"mlx": m.get("mlx"), "mlx_vlm": m.get("mlx_vlm"), "python": m.get("python")}

    def baseline_path(self, spec: str) -> Path:
        from .baselines import baseline_path
        from .models import model_slug

        return baseline_path(self.settings.baseline_dir, self.machine["key"], model_slug(spec))

    def baseline(self, spec: str) -> Any:
        """The stored baseline file of a model on this chip: None if there is none.

        Raises BaselineError (naming the file) if it cannot be read.
        """
        from .baselines import BaselineError, read

        if spec not in self._baselines:
            from .baselines import reference_path
            from .models import model_slug

            measured = self.baseline_path(spec)
            reference = reference_path(self.settings.baseline_dir, self.machine["key"], model_slug(spec))
            path = measured if measured.exists() or not reference.exists() else reference
            try:
                self._baselines[spec] = read(path, expect_chip=self.machine["key"]) if path.exists() else None
            except BaselineError as exc:
                self._baselines[spec] = exc
        value = self._baselines[spec]
        if isinstance(value, Exception):
            raise value
        return value

    @property
    def machine(self) -> dict[str, Any]:
        if self._machine is None:
            from .machine import identity

            info = identity(self.settings.chip)
            self.config.hook.pytest_mlxvlm_update_machine_info(config=self.config, machine=info)
            self._machine = info
        return self._machine


# -- parametrization and fixtures -------------------------------------------------------------

def _marker_settings(node: pytest.Item | pytest.Function | Any, base: Settings) -> Settings:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[settings_key]
    from .models import short_name

    if "mlx_model" in metafunc.fixturenames:
        names = [short_name(m) for m in settings.models]
        ids = names if len(set(names)) == len(names) else list(settings.models)
        metafunc.config.stash[session_key].model_ids.update(zip(settings.models, ids))
        metafunc.parametrize("mlx_model", settings.models, ids=ids, indirect=True, scope="session")
    if "mlx_cache" in metafunc.fixturenames:
        engines = list(metafunc.config.stash[engines_key])
        metafunc.parametrize("mlx_cache", engines, ids=engines, indirect=True)
    if "mlx_resolution" in metafunc.fixturenames:
        local = _marker_settings(metafunc.definition, settings)
        metafunc.parametrize(
            "mlx_resolution", local.resolutions, ids=[r.id for r in local.resolutions]
        )


@pytest.fixture(scope="session")
def mlx_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-mlxvlm settings of this session."""
    return pytestconfig.stash[settings_key]


@pytest.fixture(scope="session")
def mlx_machine(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The identity of this machine: chip key, backend, OS and library versions."""
    return pytestconfig.stash[session_key].machine


@pytest.fixture(scope="session")
def mlx_model(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[Any]:
    """The model under test, loaded once per session (parametrized over ``--mlx-model``)."""
    from .models import ModelLoadError

    spec = getattr(request, "param", None) or pytestconfig.stash[settings_key].models[0]
    bench = pytestconfig.stash[session_key]
    start = time.perf_counter()
    try:
        loaded = pytestconfig.hook.pytest_mlxvlm_load_model(spec=spec, settings=bench.settings)
    except ModelLoadError as exc:
        bench.load_errors[spec] = str(exc)
        loaded = None
    if loaded is None:
        pytest.fail(bench.load_errors.get(spec, f"no engine could load {spec!r}"), pytrace=False)
    bench.load_times[spec] = getattr(loaded, "load_time_s", None) or time.perf_counter() - start
    yield loaded
    del loaded
    try:
        import mlx.core as mx

        mx.clear_cache()
    except ImportError:
        pass


@pytest.fixture
def mlx_resolution(request: pytest.FixtureRequest) -> Resolution:
    """The image size of this test (parametrized over the sweep)."""
    param = getattr(request, "param", None)
    if param is None:
        return request.config.stash[settings_key].resolutions[0]
    return param


@pytest.fixture(scope="session")
def mlx_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlxvlm-images")


@pytest.fixture
def mlx_image(mlx_resolution: Resolution, mlx_image_dir: Path, mlx_settings: Settings) -> Path:
    """A PNG at this test's resolution: the synthetic pattern, or ``--mlx-image`` resized."""
    from .images import ImageError, image_file

    try:
        return image_file(mlx_resolution, mlx_image_dir, mlx_settings.image)
    except ImageError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)


_THIS_TEST = object()


class MlxStaleBaselineWarning(pytest.PytestWarning):
    """A metric improved well beyond its tolerance: the stored baseline is out of date."""


class MlxBench:
    """Runs measured generations for one test and records them for the reports."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        model: Any,
        resolution: Resolution,
        image: Path,
        settings: Settings,
    ) -> None:
        self.request = request
        self.model = model
        self.resolution = resolution
        self.image = image
        self.settings = settings
        self.results: list[Any] = []

    def run(
        self,
        image: Any = _THIS_TEST,
        prompt: str | None = None,
        *,
        max_tokens: int | None = None,
        rounds: int | None = None,
        warmup: int | None = None,
        **generate_kwargs: Any,
    ) -> Any:
        """Warm up, then measure ``rounds`` generations of this test's image.

        ``image`` replaces the image (a path or PIL image; None for a text-only prompt);
        the other keywords replace the session's settings; further keywords go to
        ``mlx_vlm.stream_generate`` (e.g. ``prompt_cache_state``).
        """
        from .runner import METRICS, CaseResult, GenerationRequest, run_case

        settings = self.settings
        request = GenerationRequest(
            image=self.image if image is _THIS_TEST else image,
            prompt=settings.prompt if prompt is None else prompt,
            max_tokens=settings.max_tokens if max_tokens is None else max_tokens,
            generate_kwargs=generate_kwargs,
        )
        n_rounds = settings.rounds if rounds is None else rounds
        n_warmup = settings.warmup if warmup is None else warmup
        hook = self.request.config.hook

        def measure() -> Any:
            return hook.pytest_mlxvlm_measure(model=self.model, request=request)

        benchmark = self._pytest_benchmark()
        if benchmark is None:
            samples, warm = run_case(measure, rounds=n_rounds, warmup=n_warmup)
        else:
            collected: list[Any] = []
            benchmark.group = self.model.spec
            benchmark.pedantic(
                lambda: collected.append(measure()),
                rounds=n_rounds,
                warmup_rounds=n_warmup,
                iterations=1,
            )
            samples, warm = collected[n_warmup:], collected[:n_warmup]
        result = CaseResult(
            model=self.model.spec,
            resolution=self.resolution.id if request.image is not None else "text",
            samples=samples,
            warmup=warm,
            workload={
                **settings.workload(),
                "prompt": request.prompt,
                "max_tokens": request.max_tokens,
                "rounds": n_rounds,
                "warmup": n_warmup,
            },
            load_time_s=self.request.config.stash[session_key].load_times.get(self.model.spec, 0.0),
            test_id=_nodeid(self.request.node),
        )
        result.case_key = self._case_key()
        result.bandwidth = self.request.config.stash[session_key].decode_limit(self.model, result)
        if benchmark is not None:
            benchmark.extra_info.update(
                {f"mlxvlm_{m}": result.summary(m).median for m in METRICS}
            )
        self.results.append(result)
        self.request.node.stash.setdefault(results_key, []).append(result)
        try:
            self._gate(result, lambda: run_case(measure, rounds=n_rounds, warmup=0)[0])
        finally:
            hook.pytest_mlxvlm_case_finished(config=self.request.config, result=result)
        return result

    def _case_key(self) -> str:
        """The test's module, name and parameters without the model: its baseline's key.

        ``pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]``: the
        module's import name keeps the key the same wherever the tests live on disk.
        """
        node = self.request.node
        module = getattr(getattr(node, "module", None), "__name__", None)
        path_part, _, rest = _nodeid(node).partition("::")
        name, _, params = rest.partition("[")
        params = params.rstrip("]")
        model_id = self.request.config.stash[session_key].model_ids.get(self.model.spec, "")
        if model_id and params.startswith(model_id):
            params = params[len(model_id):].lstrip("-")
        elif model_id:
            params = params.replace(f"-{model_id}", "", 1)
        key = f"{module or path_part}::{name}" + (f"[{params}]" if params else "")
        if self.results:
            key += f"#{len(self.results) + 1}"
        return key

    def _gate(self, result: Any, remeasure: Callable[[], list[Any]]) -> None:
        """Compare with the stored baseline; fail, skip or warn as the settings say."""
        from . import gate
        from .baselines import BaselineError

        bench = self.request.config.stash[session_key]
        settings = self.settings
        try:
            stored_file = bench.baseline(self.model.spec)
        except BaselineError as exc:
            error = str(exc)
        else:
            error = None
        if error is not None:
            pytest.fail(error, pytrace=False)
        stored = stored_file.cases.get(result.case_key) if stored_file else None
        reference = stored_file.reference if stored_file and stored_file.kind == "reference" else None
        comparison = gate.check(
            result,
            result.case_key,
            stored,
            tolerances=settings.tolerances,
            alpha=settings.alpha,
            drift_alpha=bench.drift_alpha(settings.tolerances),
            libraries=bench.libraries,
            reference=reference,
            remeasure=remeasure if settings.confirm and not settings.update else None,
        )
        result.comparison = comparison
        path = stored_file.path if stored_file else bench.baseline_path(self.model.spec)
        if settings.update:
            return
        if comparison.status == "new":
            message = f"no baseline for {result.case_key} in {path}"
            if settings.missing == "fail":
                pytest.fail(f"mlxvlm: {message}; create it with --mlx-update-baselines=new",
                            pytrace=False)
            if settings.missing == "skip":
                pytest.skip(f"mlxvlm: {message}")
            return
        if comparison.status in ("regressed", "workload-changed"):
            selector = self.request.node.callspec.id if hasattr(self.request.node, "callspec") \
                else self.request.node.name
            command = gate.update_command(self.request.config.invocation_params.args, selector)
            pytest.fail(
                gate.failure_message(
                    comparison,
                    model=self.model.spec,
                    chip=bench.machine["key"],
                    baseline_path=str(path),
                    command=command,
                ),
                pytrace=False,
            )
        stale = settings.stale
        improved = [m for m in comparison.metrics if stale is not None and -m.worse_by > stale]
        if improved:
            import warnings

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
        if self.results or _is_worker(config) or not config.pluginmanager.has_plugin("benchmark"):
            return None
        try:
            benchmark = self.request.getfixturevalue("benchmark")
        except pytest.FixtureLookupError:
            return None
        return None if getattr(benchmark, "disabled", True) else benchmark


@pytest.fixture
def mlx_bench(
    request: pytest.FixtureRequest,
    mlx_model: Any,
    mlx_resolution: Resolution,
    mlx_image: Path,
    mlx_settings: Settings,
) -> MlxBench:
    """Measure generations of ``mlx_model`` on ``mlx_image``: ``mlx_bench.run()``."""
    settings = _marker_settings(request.node, mlx_settings)
    return MlxBench(request, mlx_model, mlx_resolution, mlx_image, settings)


XDIST_GROUP = "mlxvlm-measured"


def _nodeid(node: Any) -> str:
    """The test's node id without the ``@group`` suffix pytest-xdist's loadgroup adds."""
    return node.nodeid.removesuffix(f"@{XDIST_GROUP}")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bench = config.stash[session_key]
    bench.measured_total = sum("mlx_bench" in getattr(item, "fixturenames", ()) for item in items)
    bench.started = time.perf_counter()
    if _is_worker(config) and config.workerinput.get("mlxvlm_dist") == "loadgroup":  # type: ignore[attr-defined]
        # The controller schedules by group: measured tests (all that load a model) form one.
        for item in items:
            if "mlx_model" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(XDIST_GROUP))
                _group_nodeid(item)


def _group_nodeid(item: pytest.Item) -> None:
    """Append xdist's ``@group`` suffix to a measured test's node id, as loadgroup expects.

    xdist 3.8 assigns ``item._nodeid``, which pytest 9.2 no longer reads (node ids live in
    ``_id``), so its loadgroup scheduling silently spreads groups; this sets whichever the
    running pytest uses. If neither exists, measured tests still never overlap (see
    ``pytest_runtest_protocol``).
    """
    nodeid = f"{item.nodeid}@{XDIST_GROUP}"
    if hasattr(item, "_id"):
        try:
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(nodeid)
        except Exception:  # noqa: BLE001 - another pytest: leave the id alone
            pass
    elif hasattr(item, "_nodeid"):
        item._nodeid = nodeid


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand what it measured to the controller, which reports."""
    config = session.config
    if not _is_worker(config):
        return
    bench = config.stash[session_key]
    config.workeroutput["mlxvlm"] = json.dumps({  # type: ignore[attr-defined]
        "results": [r.to_dict() for r in bench.results],
        "load_times": bench.load_times,
        "load_errors": bench.load_errors,
        "cache": _cache_dicts(config),
    })


def _cache_dicts(config: pytest.Config) -> list[dict[str, Any]]:
    """The session's cache records with their steps as dicts (JSON report, xdist hand-over)."""
    return [{**rec, "steps": [st.to_dict() for st in rec["steps"]]}
            for rec in config.stash.get(cache_key, [])]


def _figures(result: Any) -> str:
    """The key figures of a finished case, for the progress line."""
    speed = result.summary("end_to_end_tps").median
    ttft = result.summary("ttft_s").median
    return (f"{result.model} {result.resolution}: {speed:.1f} tok/s, TTFT {ttft * 1000:.0f} ms, "
            f"decode {result.summary('generation_tps').median:.1f} tok/s")


def _progress(config: pytest.Config, figures: str) -> None:
    """With -v, a line per finished case: key figures and the estimated time left."""
    bench = config.stash[session_key]
    bench.finished += 1
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 1:
        return
    elapsed = time.perf_counter() - bench.started
    total = max(bench.measured_total, bench.finished)
    eta = elapsed / bench.finished * (total - bench.finished)
    reporter.write_line(f"mlxvlm: {figures} [{bench.finished}/{total}, ~{eta:.0f}s left]")


def pytest_mlxvlm_case_finished(config: pytest.Config, result: Any) -> None:
    """The progress line (on a pytest-xdist worker, the controller writes it from the report)."""
    if not _is_worker(config):
        _progress(config, _figures(result))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    """On pytest-xdist workers, measured tests run one at a time whatever the scheduling."""
    lock_path = getattr(item.config, "workerinput", {}).get("mlxvlm_lock")
    if not lock_path or "mlx_model" not in getattr(item, "fixturenames", ()):
        return (yield)
    from filelock import FileLock

    with FileLock(lock_path):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    item.stash.setdefault(phase_key, {})[report.when] = report.outcome
    return report


def pytest_runtest_teardown(item: pytest.Item) -> None:
    results = item.stash.get(results_key, None)
    if not results:
        return
    outcome = item.stash.get(phase_key, {}).get("call", "failed")
    bench = item.config.stash[session_key]
    for result in results:
        result.outcome = outcome
        bench.results.append(result)
    extra = getattr(item, "user_properties", None)
    if extra is not None:
        for result in results:
            med = result.summary("end_to_end_tps").median
            extra.append((f"mlxvlm:{result.resolution}:end_to_end_tps", round(med, 3)))
            if result.comparison is not None:
                extra.append((f"mlxvlm:{result.resolution}:baseline", result.comparison.status))
        if _is_worker(item.config):
            extra.extend(("mlxvlm:progress", _figures(result)) for result in results)


# -- reports -----------------------------------------------------------------------------------

class MlxReporter:
    """Prints the results table per model and writes the JSON report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._written: list[Path] = []

    @property
    def bench(self) -> BenchSession:
        return self.config.stash[session_key]

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: tell each worker how the controller schedules."""
        node.workerinput["mlxvlm_dist"] = getattr(self.config.option, "dist", "no")
        node.workerinput["mlxvlm_lock"] = str(_measure_lock())

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """pytest-xdist: the measured tests a worker collected (grouped ones), for the ETA."""
        if self.bench.started == 0.0:
            self.bench.started = time.perf_counter()
        grouped = sum(i.endswith(f"@{XDIST_GROUP}") for i in ids)
        self.bench.measured_total = max(self.bench.measured_total, grouped)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """pytest-xdist: the progress lines of cases measured on workers."""
        if report.when == "teardown" and hasattr(report, "node"):
            for name, figures in report.user_properties:
                if name == "mlxvlm:progress":
                    _progress(self.config, figures)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: take a finished worker's results into this session's reports."""
        from .cache import StepResult
        from .runner import CaseResult

        payload = getattr(node, "workeroutput", {}).get("mlxvlm")
        if not payload:
            return
        data = json.loads(payload)
        bench = self.bench
        bench.results.extend(CaseResult.from_dict(r) for r in data["results"])
        bench.load_times.update(data["load_times"])
        bench.load_errors.update(data["load_errors"])
        self.config.stash.setdefault(cache_key, []).extend(
            {**rec, "steps": [StepResult.from_dict(st) for st in rec["steps"]]}
            for rec in data["cache"]
        )

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        s = self.bench.settings
        sizes = ", ".join(r.id for r in s.resolutions)
        lines = [
            f"mlxvlm: models {', '.join(s.models)}; {len(s.resolutions)} resolutions ({sizes})",
            f"mlxvlm: {s.rounds} rounds after {s.warmup} warmup, {s.max_tokens} tokens each",
        ]
        dist = getattr(config.option, "dist", "no") if getattr(config.option, "numprocesses", None) else "no"
        if dist == "loadgroup":
            lines.append(f"mlxvlm: tests that use mlx_model run on one pytest-xdist worker "
                         f"(xdist_group {XDIST_GROUP!r}); results from all workers are merged")
        elif dist != "no":
            lines.append(f"mlxvlm: with --dist {dist}, measured tests run one at a time but "
                         "possibly on several workers, each loading the model; --dist load groups them")
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .report import by_model, gate_summary, model_section, sensitivity, sensitivity_line

        bench = self.bench
        if not bench.results and not bench.load_errors:
            self._cache_report(terminalreporter)
            return
        machine = bench.machine
        tr = terminalreporter
        for model, cases in by_model(bench.results).items():
            tr.write_sep("=", f"mlxvlm: {model} on {machine['chip']} ({machine['backend']})")
            for line in model_section(model, cases, bench.load_times.get(model)):
                tr.write_line(line)
        for model, error in bench.load_errors.items():
            tr.write_sep("=", f"mlxvlm: {model} not measured")
            tr.write_line(error)
        self._cache_report(tr)
        for model, cases in by_model(bench.results).items():
            detect = sensitivity(cases, bench.settings.tolerances, bench.settings.alpha)
            tr.write_line(f"{model}: " + sensitivity_line(detect, bench.settings.rounds))
        if bench.gate_counts:
            tr.write_sep("-", f"mlxvlm baselines ({machine['key']}): {gate_summary(bench.gate_counts)}")
            for model, keys in bench.unused.items():
                for key in keys:
                    tr.write_line(f"unused baseline: {key} ({model}, {bench.baseline_path(model)})")
            for line in bench.baseline_messages:
                tr.write_line(line)
        for path in self._written:
            tr.write_sep("-", f"mlxvlm: report written to {path}")

    def _cache_report(self, tr: Any) -> None:
        from .report import cache_sections

        records = self.config.stash.get(cache_key, [])
        for title, lines in cache_sections(records):
            tr.write_sep("=", title)
            for line in lines:
                tr.write_line(line)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        bench = self.bench
        self._written = []
        if bench.results:
            self._finish_baselines(int(exitstatus))
        if bench.settings.markdown_path is not None and bench.results:
            self._write_markdown(bench.settings.markdown_path)
        history = bench.settings.history_path
        if history and bench.results and int(exitstatus) != int(pytest.ExitCode.INTERRUPTED):
            self._append_history(history)
        path = bench.settings.json_path
        if path is None:
            return
        from .report import json_document, write_json

        document = json_document(
            bench.results,
            settings=bench.settings.describe(),
            machine=bench.machine,
            extra={
                "load_times_s": bench.load_times,
                "errors": bench.load_errors,
                "cache": _cache_dicts(self.config),
            },
        )
        write_json(path, document)
        self._written.append(path)

    def _finish_baselines(self, exitstatus: int) -> None:
        """Count the verdicts, list unused baselines, and write updates from a passed session."""
        from .baselines import BaselineError, burst_note, case_from_result, update
        from .report import by_model, gate_counts

        bench = self.bench
        settings = bench.settings
        measured: dict[str, set[str]] = {}
        for r in bench.results:
            measured.setdefault(r.model, set()).add(r.case_key)
        for spec, keys in measured.items():
            try:
                stored = bench.baseline(spec)
            except BaselineError:
                continue
            if stored is not None:
                unused = sorted(set(stored.cases) - keys)
                if unused:
                    bench.unused[spec] = unused
                note = burst_note(stored) if not settings.update else None
                if note:
                    bench.baseline_messages.append(f"{spec}: {note}")
        written = 0
        if settings.update:
            if exitstatus != 0:
                bench.baseline_messages.append(
                    f"baselines not updated: the session did not pass (exit status {exitstatus}); "
                    "nothing was written"
                )
            else:
                for spec, cases in by_model(bench.results).items():
                    passed = {r.case_key: case_from_result(r, bench.libraries)
                              for r in cases if r.outcome == "passed"}
                    path = bench.baseline_path(spec)
                    try:
                        keys = update(path, model=spec, chip=bench.machine["key"],
                                      machine=bench.machine, cases=passed,
                                      mode=settings.update)
                    except BaselineError as exc:
                        bench.baseline_messages.append(f"baselines not updated: {exc}")
                        continue
                    written += len(keys)
                    bench.baseline_messages.append(
                        f"{len(keys)} baseline case(s) written to {path}"
                        if keys else f"no baseline case written to {path} (all exist)"
                    )
        bench.gate_counts = gate_counts(
            bench.results, unused=sum(len(v) for v in bench.unused.values()), updated=written
        )

    def _append_history(self, path: Path) -> None:
        from .history import append, git_state, session_record

        record = session_record(
            self.bench.results,
            machine=self.bench.machine,
            settings=self.bench.settings.describe(),
            git=git_state(self.config.rootpath),
        )
        append(path, record)
        self._written.append(path)

    def _write_markdown(self, path: Path) -> None:
        from .report import atomic_write_text, markdown_report

        bench = self.bench
        text = markdown_report(bench.results, machine=bench.machine,
                               counts=bench.gate_counts, unused=bench.unused)
        atomic_write_text(path, text)
        self._written.append(path)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(text)
