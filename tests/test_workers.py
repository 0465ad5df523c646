"""Measuring workers: the protocol, crashes, hangs and clean stops (real subprocesses)."""

import sys

import pytest

from pytest_mlxvlm.measure.worker import decode_bytes
from pytest_mlxvlm.measure.workers import (
    LOG_TAIL,
    WorkerError,
    WorkerProcess,
    exit_reason,
    log_tail,
    new_log,
    plugin_copy,
    stop_all,
)


@pytest.fixture
def worker(tmp_path):
    w = WorkerProcess("head", sys.executable, [str(plugin_copy(tmp_path))], log=tmp_path / "w.log",
                      timeout_s=60)
    yield w
    w.stop()


def test_hello_load_and_measure_with_the_fake_engine(worker, tmp_path):
    hello = worker.call({"op": "hello"})
    assert hello["mlx_vlm"] and hello["backend"] in ("metal", "cuda", "cpu")
    assert hello["protocol"] == 1
    worker.call({"op": "load", "spec": "fake:m", "side": "head"})
    worker.call({"op": "print"})  # a library printing to stdout does not break the protocol
    image = tmp_path / "i.png"
    from PIL import Image

    Image.new("RGB", (224, 224)).save(image)
    answer = worker.call({"op": "measure", "image": str(image), "prompt": "p", "max_tokens": 8})
    assert answer["sample"]["generation_tokens"] == 8 and answer["sample"]["image_tokens"] == 64


def test_the_load_answer_says_what_decode_reads_per_token(worker, tmp_path, monkeypatch):
    (tmp_path / "speed").mkdir()
    (tmp_path / "speed" / "fake_mlx_speed.py").write_text("WEIGHT_BYTES = 5000\nKV_BYTES_PER_POSITION = 40\n")
    worker.path.append(str(tmp_path / "speed"))
    answer = worker.call({"op": "load", "spec": "fake:m", "side": "head"})
    assert (answer["weight_bytes"], answer["kv_bytes_per_position"]) == (5000, 40)


def test_a_model_whose_bytes_cannot_be_computed_still_loads():
    # a fake engine's model, an architecture without a text config: None, never an error
    assert decode_bytes(None) == {"weight_bytes": None, "kv_bytes_per_position": None, "model_bytes": None}


def test_measuring_code_is_the_copy(worker, tmp_path):
    worker.call({"op": "hello"})
    assert str(tmp_path / "measuring-code") in worker.path[0]
    assert not (tmp_path / "measuring-code" / "pytest_mlxvlm" / "builtin").exists()


def test_an_error_answer_keeps_the_worker(worker):
    with pytest.raises(WorkerError, match="head worker: no model loaded"):
        worker.call({"op": "measure", "image": None, "prompt": "p", "max_tokens": 4})
    assert worker.alive


def test_a_crash_names_the_signal_and_the_last_output(worker):
    worker.call({"op": "hello"})
    with pytest.raises(WorkerError, match=r"head worker died during 'crash' \((killed by SIGABRT|exit status 134)"):
        worker.call({"op": "crash"})
    assert not worker.alive
    assert worker.call({"op": "hello"})["ok"]  # the next request starts a fresh worker


def test_a_hang_is_stopped_after_the_timeout(worker):
    worker.call({"op": "hello"})
    with pytest.raises(WorkerError, match="did not answer 'sleep' within 1 s and was stopped"):
        worker.call({"op": "sleep", "seconds": 60}, timeout_s=1)
    assert not worker.alive


def test_a_missing_interpreter_is_one_line(tmp_path):
    w = WorkerProcess("base", str(tmp_path / "nope" / "python"), [])
    with pytest.raises(WorkerError, match="base worker could not start"):
        w.call({"op": "hello"})


def test_stop_all_leaves_no_process(tmp_path):
    workers = [WorkerProcess(n, sys.executable, [str(plugin_copy(tmp_path / n))]) for n in ("a", "b")]
    procs = []
    for w in workers:
        w.call({"op": "hello"})
        procs.append(w._proc)
    stop_all()
    assert all(p.poll() is not None for p in procs)


@pytest.mark.parametrize("code, text", [(-11, "killed by SIGSEGV"), (1, "exit status 1"),
                                         (136, "exit status 136 (SIGFPE)")])
def test_exit_reasons(code, text):
    assert exit_reason(code) == text



def test_the_memory_check_counts_the_whole_model_not_one_tokens_reads():
    import mlx.nn as nn

    from pytest_mlxvlm.measure.worker import model_bytes

    assert model_bytes(nn.Linear(4, 2)) == (4 * 2 + 2) * 4  # float32 weight and bias


def test_a_measurement_can_announce_its_first_token(worker):
    worker.call({"op": "load", "spec": "fake:m", "side": "base"})
    worker.send({"op": "measure", "image": None, "prompt": "p", "max_tokens": 4, "first_token_event": True})
    assert worker.receive("first token") == {"ok": True, "event": "first_token"}
    assert worker.receive("measure")["sample"]["generation_tokens"] == 4
    # without asking, one answer as before
    assert "sample" in worker.call({"op": "measure", "image": None, "prompt": "p", "max_tokens": 4})


def test_a_log_tail_is_one_printable_line_of_the_last_lines(tmp_path):
    log = new_log(tmp_path / "logs", "mlxvlm-test-")
    assert log.parent == tmp_path / "logs" and log.name.startswith("mlxvlm-test-") and log.read_bytes() == b""
    assert log_tail(log) == "" and log_tail(None) == "" and log_tail(tmp_path / "gone.log") == ""
    log.write_bytes(b"x" * 5000 + b"\nTraceback:\n  File \"a.py\"\n\n\x1b[31mValueError: bad\x1b[0m\n")
    tail = log_tail(log)
    # the last line survives its escapes, and the text is cut from the front
    assert tail.endswith('Traceback: | File "a.py" | \\x1b[31mValueError: bad\\x1b[0m'), tail[-80:]
    assert tail.startswith("xxx") and len(tail) == LOG_TAIL
    assert "\x1b" not in tail and "\n" not in tail


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("leader", ["exits first", "ignores SIGTERM's end"])
def test_end_process_takes_what_the_process_started_with_it(tmp_path, leader):
    """A server that died during start-up, or that exits on SIGTERM before its helper does,
    leaves no helper behind (its process group is killed whatever the leader did)."""
    import subprocess
    import time

    from pytest_mlxvlm.measure.workers import end_process

    pidfile = tmp_path / "child.pid"
    child = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)")
    body = (f"import os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
            f"while not os.path.getsize({str(pidfile)!r}) if os.path.exists({str(pidfile)!r}) else True:\n"
            f"    time.sleep(0.05)\n"
            + ("sys.exit(1)\n" if leader == "exits first" else "time.sleep(600)\n"))
    proc = subprocess.Popen([sys.executable, "-c", body], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    helper = int(pidfile.read_text())
    if leader == "exits first":
        proc.wait(timeout=30)
    try:
        end_process(proc, term_s=1.0)
        deadline = time.monotonic() + 10  # the group's SIGKILL lands at once, but a loaded machine reaps late
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is not None and not _alive(helper), "the helper outlived its server"
    finally:
        if _alive(helper):
            import os
            import signal

            os.kill(helper, signal.SIGKILL)
