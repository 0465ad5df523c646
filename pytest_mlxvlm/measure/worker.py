"""A measuring worker process: loads one model and measures generations on request.

Run as ``python -m pytest_mlxvlm.measure.worker``. It reads one JSON request per line on stdin and
answers one JSON line on its own channel (the original stdout; anything else the process
prints goes to stderr, so a library's print cannot break the protocol). It exits at EOF, on
``{"op": "quit"}``, or when its parent goes away, however it went: it ties itself to the
parent first thing (``common/lifeline.py``: a parent-death signal on Linux, a watchdog thread
elsewhere), so that a SIGKILLed pytest leaves no worker holding the device. Requests:

- ``{"op": "hello"}`` -> versions and where ``mlx`` and ``mlx_vlm`` were imported from
- ``{"op": "load", "spec": "synthetic:tiny"}`` -> ``load_time_s``, and what decode reads per
  token for the bandwidth bound: ``weight_bytes`` and ``kv_bytes_per_position``, and the whole
  model's ``model_bytes`` (each null when the model cannot tell)
- ``{"op": "measure", "image": PATH|null, "prompt": ..., "max_tokens": N}`` -> ``sample``
  (and ``held_s``); optional ``"generate_kwargs"`` (JSON) go to ``stream_generate``.
  With ``"first_token_event": true`` an ``{"ok": true, "event": "first_token"}`` line comes first,
  as soon as the first token is out (a staggered A/B pair starts its other side then). With
  ``"hold_at_first_token": true`` the worker finishes the step already queued, sends that line
  and waits for ``{"op": "release"}`` before it decodes on; the time it waited is left out of
  the sample's times and answered as ``held_s`` (a barrier A/B pair: both prefills alone, both
  decodes at once)
- ``{"op": "work", "image": ..., "prompt": ..., "max_tokens": N}`` -> ``sample`` and ``work``:
  one untimed generation under the work recorder (``measure/recorder.py``) and its profile
- ``{"op": "run_test", ...}`` -> the test of this side, run in a nested pytest session on this
  side's checkout (``sidetest.py``): each ``mlx_bench.run()`` answers ``{"event": "workload"}``
  and serves requests until ``{"op": "continue"}`` or ``{"op": "abort"}``; the session's end
  answers ``{"done": true, "outcome": ...}``

Every answer holds ``"ok"``; a failure answers ``{"ok": false, "error": "one line"}``.
The paired A/B mode runs two of these (base and head) and so does crash isolation: a
generation that kills the interpreter kills only the worker.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib import metadata
from typing import Any, TextIO

from ..common.bandwidth import decode_weight_bytes, kv_bytes_per_position
from ..common.lifeline import hold
from ..common.machine import available_memory_bytes, memory_is_free
from ..models.loading import ModelLoadError, load
from ..results import GenerationRequest
from .runner import measure_generation

PROTOCOL = 1


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def hello() -> dict[str, Any]:
    """What this worker runs: interpreter, versions and where the libraries come from."""
    found: dict[str, Any] = {"protocol": PROTOCOL, "python": sys.version.split()[0],
                             "executable": sys.executable}
    for module, dist in (("mlx.core", "mlx"), ("mlx_vlm", "mlx-vlm")):
        try:
            imported = __import__(module, fromlist=["_"])
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which explains it
            return {"ok": False, "error": f"cannot import {module.split('.')[0]} "
                    f"({type(exc).__name__}: {exc}) with {sys.executable}"}
        found[dist.replace("-", "_")] = _version(dist)
        found[f"{dist.replace('-', '_')}_path"] = os.path.dirname(
            getattr(imported, "__file__", "") or "")
    import mlx.core as mx

    found["backend"] = "metal" if mx.metal.is_available() else (
        "cuda" if getattr(mx, "cuda", None) is not None and mx.cuda.is_available() else "cpu")
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    found["device"] = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
    found["available_memory"] = available_memory_bytes()
    found["memory_is_free"] = memory_is_free()
    return {"ok": True, **found}


def fake_engine(side: str) -> Any:
    """The exact fake engine of ``pytest_mlxvlm.testing`` for worker tests. A module
    ``fake_mlx_speed`` on this side's path (so that a git revision can change it) may set
    ``SLOWDOWN`` (time factor), ``IMAGE_TOKENS_EXTRA`` (a changed workload), ``WEIGHT_BYTES``
    and ``KV_BYTES_PER_POSITION`` (what the load reports of the model), and ``CRASH_AT`` /
    ``HANG_AT`` (the measurement, counted from 1, at which the worker aborts or hangs);
    otherwise ``$FAKE_MLX_*`` as in process. The head's noise has its own seed."""
    from .fake import FakeEngine  # test-only, and it imports numpy: loaded when asked for

    engine = FakeEngine()
    try:
        import fake_mlx_speed  # type: ignore[import-not-found]
    except ImportError:
        fake_mlx_speed = None
    engine.slowdown = float(getattr(fake_mlx_speed, "SLOWDOWN", engine.slowdown))
    engine.extra_image_tokens = int(getattr(fake_mlx_speed, "IMAGE_TOKENS_EXTRA", engine.extra_image_tokens))
    engine.crash_at = int(getattr(fake_mlx_speed, "CRASH_AT", 0))  # type: ignore[attr-defined]
    engine.hang_at = int(getattr(fake_mlx_speed, "HANG_AT", 0))  # type: ignore[attr-defined]
    engine.weight_bytes = int(getattr(fake_mlx_speed, "WEIGHT_BYTES", 0))  # type: ignore[attr-defined]
    engine.kv_bytes_per_position = int(  # type: ignore[attr-defined]
        getattr(fake_mlx_speed, "KV_BYTES_PER_POSITION", 0))
    engine.extra_work = str(getattr(fake_mlx_speed, "EXTRA_WORK", engine.extra_work))
    engine.version = str(getattr(fake_mlx_speed, "VERSION", engine.version))
    engine.output_change_at = int(getattr(fake_mlx_speed, "OUTPUT_CHANGE_AT", engine.output_change_at))
    if side == "head":
        engine.seed += 1
        engine.__post_init__()
    return engine


def model_bytes(model: Any) -> int:
    """Bytes of all the model's parameters as held in memory (every expert, the vision tower)."""
    from mlx.utils import tree_flatten

    return sum(int(v.nbytes) for _, v in tree_flatten(model.parameters()))


def decode_bytes(model: Any) -> dict[str, int | None]:
    """``weight_bytes`` and ``kv_bytes_per_position`` of a loaded model (what decode reads per
    token) and ``model_bytes`` (its whole size, for the A/B memory check); each None if it cannot
    be computed (an architecture the functions do not know): a load never fails for them."""
    found: dict[str, int | None] = {}
    for key, compute in (("weight_bytes", decode_weight_bytes),
                         ("kv_bytes_per_position", kv_bytes_per_position),
                         ("model_bytes", model_bytes)):
        try:
            found[key] = int(compute(model))
        except Exception:  # noqa: BLE001 - the bound is left out, the model is still measured
            found[key] = None
    return found


class Channel:
    """The protocol's two streams: one JSON request a line in, one JSON answer a line out."""

    def __init__(self, requests: TextIO, answers: TextIO) -> None:
        self.requests = requests
        self.answers = answers
        self.closed = False  # EOF or quit was read: the parent wants this worker gone

    def read(self) -> dict[str, Any] | None:
        """The next request; None at EOF or on ``quit`` (and ``closed`` is set)."""
        while not self.closed:
            line = self.requests.readline()
            if not line:
                self.closed = True
            elif line.strip():
                message = json.loads(line)
                if message.get("op") == "quit":
                    self.closed = True
                    break
                return message
        return None

    def write(self, answer: dict[str, Any]) -> None:
        try:
            self.answers.write(json.dumps(answer) + "\n")
            self.answers.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.closed = True  # the parent is gone


class Worker:
    """The worker's state: one loaded model, and the channel it answers on."""

    def __init__(self, channel: Channel | None = None) -> None:
        self.loaded: Any = None
        self.fake: Any = None
        self.channel = channel

    def load(self, spec: str, side: str = "") -> dict[str, Any]:
        start = time.perf_counter()
        if spec.startswith("fake:"):
            self.fake = fake_engine(side)
            self.loaded = self.fake.pytest_mlxvlm_load_model(spec, None)
            return {"ok": True, "load_time_s": time.perf_counter() - start,
                    "weight_bytes": self.fake.weight_bytes or None,
                    "kv_bytes_per_position": self.fake.kv_bytes_per_position or None,
                    "model_bytes": self.fake.weight_bytes or None}
        try:
            self.loaded = load(spec)
        except ModelLoadError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "load_time_s": self.loaded.load_time_s, **decode_bytes(self.loaded.model)}

    def _first_token(self, hold_at_first: bool) -> float:
        """Announce the first token; when holding, wait for ``release`` and return the seconds
        waited (left out of the sample's times)."""
        assert self.channel is not None
        if hold_at_first and self.fake is None:
            import mlx.core as mx

            mx.synchronize()  # the step queued behind the first token runs now, not while held
        self.channel.write({"ok": True, "event": "first_token"})
        if not hold_at_first:
            return 0.0
        waiting = time.perf_counter()
        message = self.channel.read()
        if message is None:
            raise KeyboardInterrupt  # the parent is gone or said quit: stop generating
        if message.get("op") != "release":
            raise RuntimeError(f"held at the first token, expected 'release', got {message.get('op')!r}")
        return time.perf_counter() - waiting

    def measure(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.loaded is None:
            return {"ok": False, "error": "no model loaded"}
        req = GenerationRequest(image=request.get("image"), prompt=request["prompt"],
                                max_tokens=int(request["max_tokens"]),
                                generate_kwargs=dict(request.get("generate_kwargs") or {}))
        hold_at_first = bool(request.get("hold_at_first_token"))
        held = [0.0]

        def first_token() -> float:
            held[0] = self._first_token(hold_at_first)
            return held[0]

        announce = hold_at_first or bool(request.get("first_token_event"))
        if self.fake is not None:
            self._fake_faults()
            if announce:
                first_token()  # the fake has no prefill to wait for
            sample = self.fake.pytest_mlxvlm_measure(self.loaded, req)
        else:
            sample = measure_generation(self.loaded.model, self.loaded.processor, req,
                                        on_first_token=first_token if announce else None)
        return {"ok": True, "sample": sample.to_dict(), "held_s": held[0]}

    def _fake_faults(self) -> None:
        """The fake engine's crash or hang at its ``crash_at``/``hang_at`` generation (tests)."""
        calls = self.fake.calls + 1
        if calls == self.fake.crash_at:
            os.abort()  # as MLX dies on a fatal error
        if calls == self.fake.hang_at:
            time.sleep(3600)

    def work(self, request: dict[str, Any]) -> dict[str, Any]:
        """One untimed generation under the work recorder: its sample and its profile."""
        if self.loaded is None:
            return {"ok": False, "error": "no model loaded"}
        req = GenerationRequest(image=request.get("image"), prompt=request["prompt"],
                                max_tokens=int(request["max_tokens"]),
                                generate_kwargs=dict(request.get("generate_kwargs") or {}))
        if self.fake is not None:
            self._fake_faults()
            sample, work = self.fake.pytest_mlxvlm_work_profile(self.loaded, req)
        else:
            from .runner import record_work
            from .work import WorkProfileUnavailable

            try:
                sample, work = record_work(self.loaded.model, self.loaded.processor, req, spec=self.loaded.spec)
            except WorkProfileUnavailable as exc:
                return {"ok": False, "error": f"work profile unavailable: {exc}", "unavailable": True}
        return {"ok": True, "sample": sample.to_dict(), "work": work}

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "hello":
            return hello()
        if op == "load":
            return self.load(str(message["spec"]), str(message.get("side", "")))
        if op == "measure":
            return self.measure(message)
        if op == "work":
            return self.work(message)
        if op == "run_test":
            from .sidetest import run_test  # pytest in the worker only when a side runs its test

            return run_test(self, message)
        if op in ("release", "continue", "abort"):
            return {"ok": False, "error": f"nothing to {op}: no measurement held and no test waiting"}
        if op == "crash":  # for tests of crash isolation: die as MLX does on a fatal error
            os.abort()
        if op == "sleep":  # for tests of hang detection
            time.sleep(float(message.get("seconds", 3600)))
            return {"ok": True}
        if op == "print":  # for tests: a library's print must not break the protocol
            print("noise on stdout")
            return {"ok": True}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """``handle``, with every error as a one-line answer (the parent decides what it means)."""
        try:
            return self.handle(message)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            text = str(exc).splitlines()[0] if str(exc) else ""
            return {"ok": False, "error": f"{type(exc).__name__}: {text}"}


def serve(requests: TextIO, answers: TextIO) -> None:
    """Answer requests until EOF or quit; every error becomes a one-line answer."""
    channel = Channel(requests, answers)
    worker = Worker(channel)
    while True:
        try:
            message = channel.read()
        except json.JSONDecodeError as exc:
            channel.write({"ok": False, "error": f"JSONDecodeError: {exc}"})
            continue
        if message is None:
            break
        answer = worker.answer(message)
        if channel.closed:
            break  # quit or EOF came while the request ran (a held or nested measurement)
        channel.write(answer)


def main() -> None:
    """Die with the parent; keep the protocol on copies of the original stdin and stdout (a
    nested pytest session's capture replaces fds 0 and 1); send every other print to stderr."""
    hold()
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "r", encoding="utf-8")
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        serve(requests, channel)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
