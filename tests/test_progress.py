"""Progress a person sees, checked on a real terminal: a pytest subprocess whose output is a
pseudo-terminal (``os.openpty``), as when it runs in a shell, with pytest's capture on (no -s).

The fake engine sleeps ``FAKE_MLX_SLEEP`` seconds a generation, so that the session takes real
time for the progress interval and the estimated time left. (That a short session stays quiet
without -v is checked in process: test_plugin_fake.py.)"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from pytest_mlxvlm.testing import CONFTEST

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RUN = ["-p", "no:cacheprovider", "-p", "no:benchmark", "--mlx-model", "fake:a", "--mlx-rounds", "2",
       "--mlx-resolutions", "224x224,448x448,768x768", "--mlx-suite", "off"]
SIZES = "def test_size(mlx_bench):\n    mlx_bench.run()\n"  # one measured case per size


def on_a_terminal(cwd, *args: str, sleep: float = 0.0, timeout: float = 120.0) -> list[str]:
    """Run pytest with its output on a pseudo-terminal; the lines as a person reads them."""
    leader, follower = os.openpty()
    env = {**os.environ, "COLUMNS": "100", "FAKE_MLX_SLEEP": str(sleep)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], stdin=follower, stdout=follower,
                            stderr=follower, cwd=cwd, env=env, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side closed: the session ended
                break
            if not chunk:
                break
            output += chunk
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    text = ANSI.sub("", output.decode("utf-8", "replace")).replace("\r\n", "\n")
    return [line.split("\r")[-1] for line in text.split("\n")]  # what is left after a carriage return


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sizes=SIZES)
    return pytester.path


def test_the_progress_total_counts_only_the_selected_cases(project):
    lines = on_a_terminal(project, *RUN, "-v", "-k", "224")
    assert [line.split(" fake")[0] for line in lines if line.startswith("mlxvlm: [")] == ["mlxvlm: [1/1]"]


def test_with_v_a_line_per_case_follows_its_result(project):
    lines = on_a_terminal(project, *RUN, "-v")
    progress = [i for i, line in enumerate(lines) if line.startswith("mlxvlm: [")]
    assert [lines[i].split("]")[0] for i in progress] == ["mlxvlm: [1/3", "mlxvlm: [2/3", "mlxvlm: [3/3"]
    for i, size in zip(progress, ("224x224", "448x448", "768x768")):
        assert re.fullmatch(rf"mlxvlm: \[\d/3\] fake:a {size}: Speed [\d.]+ tok/s, TTFT \d+ ms, "
                            r"Decode 100\.0 tok/s; \d+ s so far, (~\d+ s left|done)", lines[i]), lines[i]
        assert f"test_size[fake:a-{size}] PASSED" in lines[i - 1]  # right after the test's own result
    assert lines[progress[-1]].endswith("done")


def test_without_v_a_long_session_still_says_where_it_is(project):
    """0.25 s a generation, 3 generations a case (0.75 s): with --mlx-progress 0.5, a line per case
    on any machine (at 0.15 s a generation, a fast one finished the first case inside 0.5 s)."""
    lines = on_a_terminal(project, *RUN, "--mlx-progress", "0.5", sleep=0.25)
    progress = [line for line in lines if line.startswith("mlxvlm: [")]
    assert len(progress) == 3 and progress[-1].endswith("done")
    assert all(re.search(r"; \d+ s so far, (~\d+ s left|done)$", line) for line in progress)
    first = lines.index(progress[0])
    assert lines[first - 1] == "test_sizes.py ."  # after its dot, not inside the line
