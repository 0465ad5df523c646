"""Fixtures of the cache steps through a server (loaded by ``plugin.py`` through ``pytest_plugins``):
a server of their own (mlx_vlm.server with its prefix cache on), and ``mlx_server_cache``."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ...harness.session import session_key, settings_key
from ...harness.xdist import nodeid
from ...models.loading import short_name
from ..cachefixture import MlxCache
from ..fixtures import serve
from .cache import SERVER_CACHE_ARGS, ServerCacheSession, cache_probe
from .process import APC_ENV

ENGINE = "server"  # the cache records' engine (and mlx_cache_expect's ENGINE) of steps through a server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The cache steps' server is one per ``--mlx-model``, as ``mlx_server``."""
    if "mlx_cache_server" in metafunc.fixturenames and "mlx_model" not in metafunc.fixturenames:
        models = metafunc.config.stash[settings_key].workload.models
        names = [short_name(m) for m in models]
        ids = names if len(set(names)) == len(names) else list(models)
        metafunc.config.stash[session_key].model_ids.update(zip(models, ids))
        metafunc.parametrize("mlx_cache_server", models, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def mlx_cache_server(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[Any]:
    """The server the cache steps go through: ``--mlx-server-url``'s as it is, or one started for
    them (mlx_vlm.server with APC_ENABLED=1, its disk tier off, and ``--top-logprobs-k``), apart
    from ``mlx_server``, so that the sweep measures the server as it ships (APC off)."""
    mlx_vlm = pytestconfig.stash[settings_key].server.kind == "mlx_vlm"
    yield from serve(request, pytestconfig, "server for the cache steps", env=APC_ENV if mlx_vlm else None,
                     extra_args=list(SERVER_CACHE_ARGS) if mlx_vlm else None)


@pytest.fixture
def mlx_server_cache(request: pytest.FixtureRequest, mlx_cache_server: Any,
                     pytestconfig: pytest.Config) -> Iterator[MlxCache]:
    """``mlx_cache`` through the server: ``step(...)`` then ``check()``; a fresh cache per test
    (its own tenant); the steps join the cache tables as engine ``server``. A server at
    ``--mlx-server-url`` is first asked once whether it reuses prompt tokens at all; if not, the
    steps are skipped with the reason."""
    if not mlx_cache_server.started_here:
        notes = mlx_cache_server.notes
        if "cache_probe" not in notes:
            notes["cache_probe"] = cache_probe(mlx_cache_server)
        if notes["cache_probe"]:
            pytest.skip(f"mlxvlm: {notes['cache_probe']}")
    session = ServerCacheSession(mlx_cache_server)
    yield MlxCache(request, session, ENGINE)  # type: ignore[arg-type]
    where = (f"{mlx_cache_server.kind} started here" if mlx_cache_server.started_here
             else "the server") + f" at {mlx_cache_server.url}"
    pytestconfig.stash[session_key].cache_records.append(
        {"test": nodeid(request.node), "model": mlx_cache_server.spec, "engine": ENGINE, "side": "server",
         "server": where, "steps": list(session.steps)})
