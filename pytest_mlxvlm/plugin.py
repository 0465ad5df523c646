"""pytest glue: hook implementations and fixture functions; the work lives in the modules named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import hookspec
from .common.backend import check_session as check_backend
from .config.settings import Resolution, Settings
from .gate.abmode import ABSetupError, validate
from .gate.power import ab_power_problem
from .gate.paired import format_change
from .reports.abreport import settle_text
from .harness.bench import MlxBench
from .harness.bench import image_or_fail as _image_or_fail
from .harness.bench import marker_settings as _marker_settings
from .harness.options import add_options, ini_value, settings_from_config
from .harness.selection import SUITE_DIR, drop_auto_suite, drop_server_cache_steps, ignored_suite
from .harness.session import BenchSession, results_key, session_key, settings_key, side_key
from .harness.sidebyside import SideBySide, for_side, worker_model
from .harness.terminal import PROGRESS, MlxReporter, figures, progress
from .harness.xdist import group_measured, is_measured, is_worker, lock_for, measure_lock, nodeid, use_loadgroup
from .measure.images import synthetic_image
from .measure.runner import measure_generation, record_work
from .measure.sidetest import active as active_side
from .measure.workers import WorkerError
from .models.loading import LoadedModel, ModelLoadError, load, short_name
from .suites.cachefixture import MlxCache, choose_engines, engines_key, expect_key, parse_expectations, start_session
from .suites.server.loadbench import asked_off, parametrize_serving
from .suites.server.process import stop_all as stop_servers
from .suites.video import parametrize_media

REPORTER = "mlxvlm-reporter"
SIDE_BY_SIDE = "mlxvlm-side-by-side"
pytest_plugins = ["pytest_mlxvlm.suites.fixtures", "pytest_mlxvlm.suites.server.fixtures"]  # the video, batch, server fixtures
phase_key = pytest.StashKey[dict]()  # on an item: the outcome of each phase


# -- configuration ----------------------------------------------------------------------------

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mlx_benchmark(rounds=None, max_tokens=None, warmup=None, resolutions=None, prompt=None, "
        "tolerance=None): per-test settings for pytest-mlxvlm measurements",
    )
    settings = settings_from_config(config)
    if getattr(config.option, "mlx_pytest_benchmark", None) and not config.pluginmanager.has_plugin("benchmark"):
        raise pytest.UsageError("pytest-mlxvlm: --mlx-pytest-benchmark needs pytest-benchmark: "
                                "pip install 'pytest-mlxvlm[benchmark]' (or pytest-benchmark)")
    side = active_side()
    if side is not None:  # a nested session in an A/B side's worker: its test, measured by the parent
        settings = for_side(settings)
        config.stash[side_key] = side
    elif settings.ab.active:
        if settings.gate.update:
            raise pytest.UsageError("pytest-mlxvlm: --mlx-update-baselines cannot be used with the "
                                    "A/B mode (--mlx-ab-base / --mlx-ab-python): it has no stored baselines")
        try:
            validate(settings.ab, config.rootpath)
        except ABSetupError as exc:
            raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None
    config.stash[settings_key] = settings
    config.stash[session_key] = BenchSession(config, settings)
    if settings.ab.active:
        config.pluginmanager.register(SideBySide(config), SIDE_BY_SIDE)
    try:
        config.stash[engines_key] = choose_engines(
            config, config.option.mlx_cache_engine or ini_value(config, "mlx_cache_engine"))
        config.stash[expect_key] = parse_expectations(config.getini("mlx_cache_expect"))
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None
    if settings.workload.suites and str(SUITE_DIR) not in config.args:
        config.args.append(str(SUITE_DIR))  # unselected suites are ignored at collection
    use_loadgroup(config, bool(config.option.mlx_model or ini_value(config, "mlx_model")
                               or settings.workload.suites))
    if not is_worker(config) and side is None:
        config.pluginmanager.register(MlxReporter(config), REPORTER)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect only the selected built-in suites (unless one was named on the command line)."""
    return ignored_suite(collection_path, config)


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_servers()
    bench = config.stash.get(session_key, None)
    if bench is not None:
        bench.close()
    reporter = config.pluginmanager.get_plugin(REPORTER)
    if reporter is not None:
        config.pluginmanager.unregister(reporter)
        measure_lock().unlink(missing_ok=True)
    side_by_side = config.pluginmanager.get_plugin(SIDE_BY_SIDE)
    if side_by_side is not None:
        config.pluginmanager.unregister(side_by_side)


# -- default engine ---------------------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_mlxvlm_load_model(spec: str, settings: Settings) -> Any:
    return load(spec)


@pytest.hookimpl(trylast=True)
def pytest_mlxvlm_measure(model: Any, request: Any) -> Any:
    return measure_generation(model.model, model.processor, request)


@pytest.hookimpl(trylast=True)
def pytest_mlxvlm_work_profile(model: Any, request: Any) -> Any:
    if model.model is None or model.processor is None:  # a model of another engine
        return None
    return record_work(model.model, model.processor, request, spec=model.spec)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """pytest-benchmark's machine info carries the MLX chip identity."""
    machine_info["mlx"] = config.stash[session_key].machine


def pytest_mlxvlm_case_finished(config: pytest.Config, result: Any) -> None:
    """The progress line (on a pytest-xdist worker, the controller writes it from the report)."""
    if not is_worker(config):
        progress(config, figures(result))


# -- collection and parametrization -----------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[settings_key]
    models = settings.workload.models
    if "mlx_model" in metafunc.fixturenames:
        names = [short_name(m) for m in models]
        ids = names if len(set(names)) == len(names) else list(models)
        metafunc.config.stash[session_key].model_ids.update(zip(models, ids))
        metafunc.parametrize("mlx_model", models, ids=ids, indirect=True, scope="session")
    if "mlx_server" in metafunc.fixturenames and "mlx_model" not in metafunc.fixturenames:
        names = [short_name(m) for m in models]
        ids = names if len(set(names)) == len(names) else list(models)
        metafunc.config.stash[session_key].model_ids.update(zip(models, ids))
        metafunc.parametrize("mlx_server", models, ids=ids, indirect=True, scope="session")
    if "mlx_server_concurrency" in metafunc.fixturenames:
        levels = settings.server.concurrency
        metafunc.parametrize("mlx_server_concurrency", levels, ids=[f"c{n}" for n in levels],
                             indirect=True)
    if "mlx_cache" in metafunc.fixturenames:
        engines = list(metafunc.config.stash[engines_key])
        metafunc.parametrize("mlx_cache", engines, ids=engines, indirect=True)
    if "mlx_resolution" in metafunc.fixturenames:
        local = _marker_settings(metafunc.definition, settings).workload
        metafunc.parametrize("mlx_resolution", local.resolutions, ids=[r.id for r in local.resolutions])
    parametrize_media(metafunc, settings)  # mlx_video, mlx_batch_case
    parametrize_serving(metafunc, settings.server)  # mlx_server_rate, _workload, _soak


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    off = [item for item in items if asked_off(item)]  # serving cases whose option was not given
    if off:
        items[:] = [item for item in items if not asked_off(item)]
        config.hook.pytest_deselected(items=off)
    group_measured(config, items)


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")  # after -k and -m
def pytest_collection_modifyitems_after_deselection(config: pytest.Config, items: list[pytest.Item]) -> None:
    drop_auto_suite(config, items)
    drop_server_cache_steps(config, items)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What this session measures, counted once every deselection (--lf too) is done: the
    progress total and the alpha each comparison is judged at."""
    bench = session.config.stash[session_key]
    bench.measured_total = sum(is_measured(item) for item in session.items)
    problem = ab_power_problem(bench.settings, bench.measured_total) if bench.measured_total else None
    if problem:
        raise pytest.UsageError(f"pytest-mlxvlm: {problem}")
    bench.started = time.perf_counter()


# -- running tests ----------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    """On pytest-xdist workers, measured tests run one at a time whatever the scheduling."""
    lock = lock_for(item)
    if lock is None:
        return (yield)
    from filelock import FileLock

    with FileLock(lock):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    item.stash.setdefault(phase_key, {})[report.when] = report.outcome
    if report.when == "teardown" and report.failed:  # an error after the call: the case did not pass
        for result in item.stash.get(results_key, None) or []:
            result.outcome = "failed"
    return report


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """A measured test's cases join the session with its outcome; JUnit gets their figures."""
    results = item.stash.get(results_key, None)
    if not results:
        return
    outcome = item.stash.get(phase_key, {}).get("call", "failed")
    bench = item.config.stash[session_key]
    for result in results:
        result.outcome = outcome
        bench.results.append(result)
        prefix = f"mlxvlm:{result.resolution}" + (f":{result.side}" if result.side else "")
        if result.samples:  # a case that failed before its first round has none
            item.user_properties.append((f"{prefix}:end_to_end_tps",
                                         round(result.summary("end_to_end_tps").median, 3)))
        comparison = result.comparison
        if comparison is not None and result.side == "head":
            item.user_properties.append((f"{prefix}:ab", comparison.status))
            if comparison.status == "inconclusive":
                item.user_properties.append((f"{prefix}:ab:inconclusive", settle_text(comparison)))
            item.user_properties.extend((f"{prefix}:ab:{m.metric}", format_change(m)) for m in comparison.metrics)
        elif comparison is not None:
            item.user_properties.append((f"{prefix}:baseline", comparison.status))
    if is_worker(item.config):
        item.user_properties.extend((PROGRESS, figures(result)) for result in results)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, naming the extra to install, when MLX cannot compute here (backend.py)."""
    if not is_worker(session.config) and session.config.stash.get(side_key, None) is None:
        check_backend(session.config, session.config.stash[settings_key], pytest_mlxvlm_load_model)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On a pytest-xdist worker: hand what it measured to the controller, which reports."""
    config = session.config
    if is_worker(config):
        config.stash[session_key].exitstatus = int(exitstatus)
        config.workeroutput["mlxvlm"] = config.stash[session_key].worker_payload()  # type: ignore[attr-defined]


# -- fixtures ---------------------------------------------------------------------------------

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
    spec = getattr(request, "param", None) or pytestconfig.stash[settings_key].workload.models[0]
    bench = pytestconfig.stash[session_key]
    side = pytestconfig.stash.get(side_key, None)
    if side is not None:  # an A/B side's worker: the model it loaded, this side's code
        yield side.loaded
        return
    if bench.settings.ab.active or bench.settings.workload.isolate:
        yield _worker_model(bench, spec)
        return
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


def _worker_model(bench: BenchSession, spec: str) -> LoadedModel:
    """A/B mode or --mlx-isolate: no model in this process, but workers that hold one."""
    kind = "ab" if bench.settings.ab.active else "isolated"
    try:
        remote = bench.ab.model(spec) if kind == "ab" else bench.isolated_model(spec)  # type: ignore[union-attr]
        remote.ensure_loaded()
    except (WorkerError, ABSetupError) as exc:
        bench.load_errors[spec] = f"{spec}: {exc}"
        error = bench.load_errors[spec]
    else:
        error = None
    if error is not None:
        pytest.fail(error, pytrace=False)
    bench.load_times[spec] = remote.load_time_s
    return worker_model(spec, remote, kind)


@pytest.fixture
def mlx_resolution(request: pytest.FixtureRequest) -> Resolution:
    """The image size of this test (parametrized over the sweep)."""
    param = getattr(request, "param", None)
    return param if param is not None else request.config.stash[settings_key].workload.resolutions[0]


@pytest.fixture(scope="session")
def mlx_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlxvlm-images")


@pytest.fixture
def mlx_image(mlx_resolution: Resolution, mlx_image_dir: Path, mlx_settings: Settings) -> Path:
    """A PNG at this test's resolution: the synthetic pattern, or ``--mlx-image`` resized."""
    return _image_or_fail(mlx_resolution, mlx_image_dir, mlx_settings.workload.image)


@pytest.fixture
def mlx_bench(request: pytest.FixtureRequest, mlx_model: Any, mlx_resolution: Resolution,
              mlx_image: Path, mlx_settings: Settings) -> MlxBench:
    """Measure generations of ``mlx_model`` on ``mlx_image``: ``mlx_bench.run()``."""
    return MlxBench(request, mlx_model, mlx_resolution, mlx_image,
                    _marker_settings(request.node, mlx_settings))


@pytest.fixture
def mlx_cache(request: pytest.FixtureRequest, mlx_model: Any, pytestconfig: pytest.Config) -> Iterator[MlxCache]:
    """A fresh prefix-cache engine on ``mlx_model``: ``step(...)`` then ``check()``, or
    ``expect(run(image, prompt), "HIT")``."""
    if mlx_model.ab is not None or mlx_model.isolated is not None:
        pytest.skip("the cache suite measures in this process; it does not run with --mlx-ab-* "
                    "or --mlx-isolate")
    hook = pytestconfig.hook
    session = start_session(pytestconfig, request.param, mlx_model,
                            lambda req: hook.pytest_mlxvlm_measure(model=mlx_model, request=req))
    yield MlxCache(request, session, request.param)
    pytestconfig.stash[session_key].cache_records.append(
        {"test": nodeid(request.node), "model": mlx_model.spec, "engine": request.param,
         "steps": list(session.steps)}
    )


@pytest.fixture
def mlx_cache_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A factory of deterministic PNG images: ``mlx_cache_image(side, seed=0)``."""
    directory = tmp_path_factory.getbasetemp() / "mlxvlm-cache-images"
    directory.mkdir(exist_ok=True)

    def make(side: int, seed: int = 0, height: int | None = None) -> Path:
        resolution = Resolution(side, height or side)
        path = directory / f"{resolution.id}-{seed}.png"
        if not path.exists():
            synthetic_image(resolution, seed=seed).save(path)
        return path

    return make
