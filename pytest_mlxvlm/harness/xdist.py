"""pytest-xdist: measured tests on one worker, never overlapping, results handed to the controller."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

XDIST_GROUP = "mlxvlm-measured"


def is_worker(config: pytest.Config) -> bool:
    """Is this process a pytest-xdist worker?"""
    return hasattr(config, "workerinput")


def nodeid(node: Any) -> str:
    """The test's node id without the ``@group`` suffix pytest-xdist's loadgroup adds."""
    return node.nodeid.removesuffix(f"@{XDIST_GROUP}")


def measure_lock() -> Path:
    """The lock file that pytest-xdist workers of this controller measure under."""
    return Path(tempfile.gettempdir()) / f".pytest-mlxvlm-{os.getpid()}.measure.lock"


MEASURING_FIXTURES = ("mlx_model", "mlx_server", "mlx_cache_server")  # a test that uses one of them measures


def measures(item: pytest.Item) -> bool:
    """Does this test measure (it loads a model, or starts or reaches a server)?"""
    return any(f in getattr(item, "fixturenames", ()) for f in MEASURING_FIXTURES)


MEASURED_FIXTURES = ("mlx_bench", "mlx_video_bench", "mlx_batch_bench", "mlx_server_bench",
                     "mlx_server_concurrency", "mlx_server_rate", "mlx_server_workload",
                     "mlx_server_soak")  # a test that uses one of them records measured cases


def is_measured(item: pytest.Item) -> bool:
    """Does this test record measured cases (rounds of generations, timed)?"""
    return any(f in getattr(item, "fixturenames", ()) for f in MEASURED_FIXTURES)


def use_loadgroup(config: pytest.Config, measuring: bool) -> None:
    """Measured tests share one worker (an xdist group) so that they never run beside each
    other; --dist load, xdist's default, becomes loadgroup for that when this session
    measures, so that other projects' xdist runs keep their scheduling."""
    if is_worker(config) or not getattr(config.option, "numprocesses", None):
        return
    if getattr(config.option, "dist", None) == "each" and measuring:
        raise pytest.UsageError(
            "pytest-mlxvlm: --dist each would measure every case on every worker and report "
            "each twice; use --dist load (measured tests then share one worker)"
        )
    if measuring and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"


def worker_input(config: pytest.Config) -> dict[str, Any]:
    """What the controller tells each worker: how it schedules, and the measuring lock."""
    return {"mlxvlm_dist": getattr(config.option, "dist", "no"), "mlxvlm_lock": str(measure_lock())}


def group_measured(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker of a loadgroup run: put every measured test in one xdist group."""
    if not is_worker(config) or config.workerinput.get("mlxvlm_dist") != "loadgroup":  # type: ignore[attr-defined]
        return
    for item in items:
        if measures(item):
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUP))
            _group_nodeid(item)


def _group_nodeid(item: pytest.Item) -> None:
    """Append xdist's ``@group`` suffix to a measured test's node id, as loadgroup expects.

    xdist 3.8 assigns ``item._nodeid``, which pytest 9.2 no longer reads (node ids live in
    ``_id``), so its loadgroup scheduling silently spreads groups; this sets whichever the
    running pytest uses. If neither exists, measured tests still never overlap (the lock).
    """
    new_id = f"{item.nodeid}@{XDIST_GROUP}"
    if hasattr(item, "_id"):
        try:
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(new_id)
        except Exception:  # noqa: BLE001 - another pytest: leave the id alone
            pass
    elif hasattr(item, "_nodeid"):
        item._nodeid = new_id


def lock_for(item: pytest.Item) -> str | None:
    """The lock a measured test runs under on a worker; None where none is needed."""
    path = getattr(item.config, "workerinput", {}).get("mlxvlm_lock")
    return path if path and measures(item) else None


def grouped_count(ids: list[str]) -> int:
    """How many of a worker's collected ids are measured tests (for the ETA)."""
    return sum(i.endswith(f"@{XDIST_GROUP}") for i in ids)
