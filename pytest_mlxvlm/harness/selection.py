"""Which built-in tests a session collects and keeps: the selected suites' files, the image
sweep only where the session has no measured tests of its own, the server's cache steps only
with ``cache``; each deselection is said in one line after collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from .session import session_key, settings_key
from .xdist import is_measured

SUITE_DIR = Path(__file__).parents[1] / "builtin"
SUITE_FILES = {"images": SUITE_DIR / "test_mlxvlm_images.py", "cache": SUITE_DIR / "test_mlxvlm_cache.py",
               "server": SUITE_DIR / "test_mlxvlm_server.py", "video": SUITE_DIR / "test_mlxvlm_video.py",
               "batch": SUITE_DIR / "test_mlxvlm_batch.py"}


def named(config: pytest.Config, text: str) -> bool:
    """Whether the command line names ``text`` (a path, a node id, a ``-k`` expression)."""
    return any(text in str(arg) for arg in config.invocation_params.args)


def ignored_suite(collection_path: Path, config: pytest.Config) -> bool | None:
    """True for a built-in suite's file that is not selected (unless named on the command line)."""
    for name, path in SUITE_FILES.items():
        if collection_path == path and name not in config.stash[settings_key].workload.suites:
            return None if named(config, path.stem) else True
    return None


def _deselect(config: pytest.Config, items: list[pytest.Item], dropped: list[pytest.Item], note: str) -> None:
    gone = set(dropped)
    items[:] = [item for item in items if item not in gone]
    config.hook.pytest_deselected(items=dropped)
    config.stash[session_key].collection_notes.append(note)


def drop_auto_suite(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--mlx-suite auto`` adds the built-in image sweep only to a session with no measured
    tests of its own: where there are some, its tests are deselected, with a note that says
    how to have them anyway."""
    work = config.stash[settings_key].workload
    images = SUITE_FILES["images"]
    if not (work.suite_auto and "images" in work.suites) or named(config, images.stem):
        return  # not added by auto, or named on the command line: wanted
    builtin = [item for item in items if item.path == images]
    own = sum(is_measured(item) or "mlx_cache" in getattr(item, "fixturenames", ())  # cache steps: timed too
              for item in items if item.path != images)
    if builtin and own:
        sweep = f"{len(builtin)} test{'s' if len(builtin) != 1 else ''}"
        _deselect(config, items, builtin,
                  f"mlxvlm: the built-in image sweep ({sweep}) is not added: this session has "
                  f"{own} measured test{'s' if own != 1 else ''} of its own; add it with --mlx-suite images")


def drop_server_cache_steps(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The server suite's prefix-cache steps (``test_server_cache_*``) check the server's cache,
    not its speed: they run where ``cache`` is selected too (``--mlx-suite server,cache``) or
    the command line names them (a node id, ``-k server_cache``); otherwise they are deselected
    with a note."""
    if "cache" in config.stash[settings_key].workload.suites or named(config, "server_cache"):
        return
    server = SUITE_FILES["server"]
    steps = [item for item in items if item.path == server and item.name.startswith("test_server_cache")]
    if steps:
        _deselect(config, items, steps,
                  f"mlxvlm: the server's prefix-cache steps ({len(steps)} tests) are not run; add them with "
                  "--mlx-suite server,cache")
