"""Shared fixtures of the repository's tests.

- ``fake``: a pytester whose conftest registers the exact fake engine (``--mlx-model fake:<name>``);
- ``noisy_engine``: the fake engine with 2% noise (``pytest.mark.usefixtures("noisy_engine")``);
- every test starts without the variables that steer the plugin or the fake engine
  (``FAKE_MLX_*``, ``PYTEST_MLXVLM_*`` but the cache, ``GITHUB_STEP_SUMMARY``); tests set them
  through ``monkeypatch`` only, so nothing leaks into the next test;
- ``--simulate-mac``: run the whole suite as if on an Apple M4 Max with MLX 0.99.0 (the machine
  identity is replaced), to check that no test depends on this machine's backend or versions.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_mlxvlm.testing import CONFTEST


# The identity of a Mac, as machine.detect() reports it there.
MAC = {
    "backend": "metal",
    "chip": "Apple M4 Max",
    "memory_gb": 128,
    "key": "apple-m4-max-128gb",
    "os": "macOS-15.1-arm64-arm-64bit",
    "python": "3.12.7",
    "mlx": "0.99.0",
    "mlx_vlm": "0.7.10",
}

# Variables that change what the plugin or the fake engine does.
STEERING = ("GITHUB_STEP_SUMMARY", "GITHUB_SHA", "GITHUB_REF_NAME")
KEPT = ("PYTEST_MLXVLM_CACHE",)  # set once per test session, below


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--simulate-mac", action="store_true",
                     help="report the machine as an Apple M4 Max (metal) with mlx 0.99.0")


@pytest.fixture(scope="session", autouse=True)
def _synthetic_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build synthetic models once per test session, away from the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_MLXVLM_CACHE", str(tmp_path_factory.mktemp("mlxvlm-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _simulated_machine(pytestconfig: pytest.Config):
    """With --simulate-mac, every session in this process sees the Mac's identity."""
    if not pytestconfig.getoption("simulate_mac"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pytest_mlxvlm.machine.detect", lambda: dict(MAC))
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No steering variable from the caller's shell or an earlier test reaches a test."""
    for name in list(os.environ):
        if name.startswith("FAKE_MLX_") or (name.startswith("PYTEST_MLXVLM_") and name not in KEPT):
            monkeypatch.delenv(name)
    for name in STEERING:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose sessions measure with the exact fake engine (``--mlx-model fake:a``)."""
    pytester.makeconftest(CONFTEST)
    return pytester


@pytest.fixture
def noisy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engine's samples vary by 2% (relative standard deviation), as real ones do."""
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.02")


@pytest.fixture
def simulated_mac(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """This process reports itself as an Apple M4 Max with MLX 0.99.0."""
    monkeypatch.setattr("pytest_mlxvlm.machine.detect", lambda: dict(MAC))
    return dict(MAC)


@pytest.fixture
def http_server():
    """``url = http_server(handler_class)``: a local HTTP server in a thread, shut down after the test."""
    import threading
    from http.server import ThreadingHTTPServer

    servers = []

    def start(handler: Any) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
