"""Fixtures of the video, batch and server suites, and the helpers every suite's fixtures share
(loaded by ``plugin.py`` through ``pytest_plugins``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from ..config.settings import Resolution, Settings
from ..harness.bench import image_or_fail, marker_settings
from ..harness.session import session_key, settings_key
from ..models.loading import ModelLoadError
from .batching import BatchBench
from .server.bench import ServerBench, start_server
from .server.loadbench import LoadBench
from .server.process import ServerError
from .video import ClipFactory, VideoBench, clip_or_fail

# -- the video and batch suites --------------------------------------------------------------

@pytest.fixture(scope="session")
def mlx_video_clip(tmp_path_factory: pytest.TempPathFactory, mlx_settings: Settings) -> ClipFactory:
    """Clips: ``mlx_video_clip(frames, fps, seed=0)`` -> a ``VideoInput`` (synthetic, or ``--mlx-video``)."""
    return ClipFactory(tmp_path_factory.mktemp("mlxvlm-video"), mlx_settings.media)


@pytest.fixture
def mlx_video(request: pytest.FixtureRequest, mlx_video_clip: ClipFactory, mlx_settings: Settings) -> Any:
    """This test's clip at its frames@fps (parametrized over ``--mlx-video-configs``)."""
    return clip_or_fail(mlx_video_clip, getattr(request, "param", None) or mlx_settings.media.video_configs[0])


@pytest.fixture
def mlx_video_bench(request: pytest.FixtureRequest, mlx_model: Any, mlx_video: Any, mlx_settings: Settings) -> VideoBench:
    """Measure generations of ``mlx_model`` on ``mlx_video``: ``mlx_video_bench.run()``."""
    return VideoBench(request, mlx_model, mlx_video, marker_settings(request.node, mlx_settings))


@pytest.fixture
def mlx_batch_bench(request: pytest.FixtureRequest, mlx_model: Any, mlx_batch_case: Any, mlx_cache_image: Any,
                    mlx_settings: Settings) -> BatchBench:
    """Measure ``mlx_vlm.batch_generate`` calls of this test's batch: ``mlx_batch_bench.run()``."""
    return BatchBench(request, mlx_model, mlx_batch_case, mlx_cache_image, marker_settings(request.node, mlx_settings))


# -- the server suite -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mlx_server(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[Any]:
    """The server of the model under test (parametrized over ``--mlx-model``): ``python -m
    mlx_vlm.server`` on a free 127.0.0.1 port, stopped at the end of the session (also after
    Ctrl-C or a failure), or the server at ``--mlx-server-url`` (neither started nor stopped)."""
    yield from serve(request, pytestconfig, "server")


def serve(request: pytest.FixtureRequest, pytestconfig: pytest.Config, label: str,
          **start: Any) -> Iterator[Any]:
    """A session fixture's server for this test's model: skipped in the A/B mode, a start that
    fails is a load error of the session and fails the test in one line, stopped on every way
    out. ``start``: ``start_server``'s keyword arguments (environment, more arguments)."""
    settings = pytestconfig.stash[settings_key]
    spec = getattr(request, "param", None) or settings.workload.models[0]
    bench = pytestconfig.stash[session_key]
    if settings.ab.active:
        pytest.skip("the server suite measures one server; it does not run with --mlx-ab-*")
    try:
        server = start_server(spec, settings.server, log_dir=bench.log_dir, stalled=bench.stalled_servers,
                              **start)
    except (ServerError, ModelLoadError) as exc:
        bench.load_errors[f"{spec} ({label})"] = f"{spec}: {label}: {exc}"
        error = bench.load_errors[f"{spec} ({label})"]
    else:
        error = None
    if error is not None:
        pytest.fail(error, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlx_server_bench(request: pytest.FixtureRequest, mlx_server: Any, mlx_resolution: Resolution,
                     mlx_settings: Settings) -> ServerBench:
    """Measure streamed requests to ``mlx_server`` with ``mlx_image``: ``mlx_server_bench.run()``.
    (The image is made only for a server still asked: one that stalled fails its cases at once.)"""
    image = None if mlx_server.url in mlx_server.stalled else request.getfixturevalue("mlx_image")
    return ServerBench(request, mlx_server, mlx_resolution, image,
                       marker_settings(request.node, mlx_settings))


def _load_bench(request: pytest.FixtureRequest, server: Any, image_dir: Path, base: Settings,
                **case: Any) -> LoadBench:
    """A serving case at the first resolution of the sweep."""
    settings = marker_settings(request.node, base)
    resolution = settings.workload.resolutions[0]
    image = image_or_fail(resolution, image_dir, settings.workload.image)
    return LoadBench(request, server, resolution, image, settings, image_dir=image_dir, **case)


@pytest.fixture
def mlx_server_concurrency(request: pytest.FixtureRequest, mlx_server: Any, mlx_image_dir: Path,
                           mlx_settings: Settings) -> ServerBench:
    """N clients (parametrized over ``--mlx-server-concurrency``) at the first resolution of the
    sweep: N requests kept in flight (``--mlx-server-concurrency-mode``: or synchronized rounds)."""
    return _load_bench(request, mlx_server, mlx_image_dir, mlx_settings, kind="concurrency",
                       clients=getattr(request, "param", 1))


@pytest.fixture
def mlx_server_rate(request: pytest.FixtureRequest, mlx_server: Any, mlx_image_dir: Path,
                    mlx_settings: Settings) -> LoadBench:
    """Open-loop arrivals at one rate of ``--mlx-server-rates`` (or a fraction of the capacity)."""
    how, value = request.param
    return _load_bench(request, mlx_server, mlx_image_dir, mlx_settings, kind="rate",
                       **{"rate" if how == "rate" else "fraction": value})


@pytest.fixture
def mlx_server_workload(request: pytest.FixtureRequest, mlx_server: Any, mlx_image_dir: Path,
                        mlx_settings: Settings) -> LoadBench:
    """One workload of ``--mlx-server-workload`` at one concurrency of the sweep."""
    work, clients = request.param
    return _load_bench(request, mlx_server, mlx_image_dir, mlx_settings, kind="workload", clients=clients,
                       work=work)


@pytest.fixture
def mlx_server_soak(request: pytest.FixtureRequest, mlx_server: Any, mlx_image_dir: Path,
                    mlx_settings: Settings) -> LoadBench:
    """The memory soak of ``--mlx-server-soak`` at the largest concurrency of the sweep."""
    return _load_bench(request, mlx_server, mlx_image_dir, mlx_settings, kind="soak", clients=request.param)
