"""Crash-isolated measuring: a model loaded in a worker process, so that a generation that
kills the interpreter (a fatal error in MLX, the out-of-memory killer) fails its case alone.
The worker is started again, and the model loaded again, for the next case."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import GenerationRequest, Sample
from .workers import WorkerError, WorkerProcess


def request_message(request: GenerationRequest) -> dict[str, Any]:
    """A generation request as a worker reads it (the image as a path or a list of them, keywords for
    ``stream_generate`` as JSON); WorkerError for keywords that cannot cross to a process."""
    image = request.image
    paths = (None if image is None else [str(i) for i in image] if isinstance(image, (list, tuple))
             else str(image))  # several images: a list of paths
    message: dict[str, Any] = {"op": "measure", "image": paths, "prompt": request.prompt,
                               "max_tokens": request.max_tokens}
    if request.generate_kwargs:
        try:
            json.dumps(request.generate_kwargs)
        except (TypeError, ValueError):
            names = ", ".join(sorted(request.generate_kwargs))
            raise WorkerError(f"mlx_bench.run({names}=...): a measuring worker (--mlx-isolate, A/B) "
                              "takes keywords with JSON values only") from None
        message["generate_kwargs"] = dict(request.generate_kwargs)
    return message


def work_message(request: GenerationRequest) -> dict[str, Any]:
    """The request for one untimed generation under the work recorder."""
    return {**request_message(request), "op": "work"}


def work_answer(answer: dict[str, Any]) -> tuple[Sample, dict[str, Any]]:
    """(sample, profile data) of a worker's answer to ``work_message``."""
    return Sample.from_dict(answer["sample"]), dict(answer["work"])


def reported_bytes(answer: dict[str, Any]) -> tuple[int | None, int | None]:
    """(weight bytes, KV bytes per position) of decode from a load answer; None where the
    worker could not tell (or is older and does not say)."""
    weights, kv = answer.get("weight_bytes"), answer.get("kv_bytes_per_position")
    return (int(weights) if weights else None, int(kv) if kv else None)


@dataclass
class IsolatedModel:
    """A model in a worker of this interpreter and environment."""

    spec: str
    timeout_s: float = 600.0
    log: Path | None = None
    log_dir: Path | None = None  # where the worker's log goes when ``log`` is not given
    info: dict[str, Any] = field(default_factory=dict)
    load_time_s: float = 0.0
    restarts: int = 0
    # what decode reads per token, as the worker reported: (weights, KV per position)
    decode_bytes: tuple[int | None, int | None] = (None, None)
    _worker: WorkerProcess | None = None

    def ensure_loaded(self) -> None:
        """Start the worker and load the model, again after a crash."""
        if self._worker is not None and self._worker.alive and self.info:
            return
        if self._worker is None:
            self._worker = WorkerProcess("measuring", sys.executable, [], log=self.log, log_dir=self.log_dir,
                                         timeout_s=self.timeout_s)
        elif self.info:
            self.restarts += 1
        hello = self._worker.call({"op": "hello"}, timeout_s=120)
        answer = self._worker.call({"op": "load", "spec": self.spec})
        self.info = dict(hello)
        self.load_time_s = float(answer.get("load_time_s", 0.0))
        self.decode_bytes = reported_bytes(answer)

    def measure(self, request: GenerationRequest) -> Sample:
        """One generation in the worker; WorkerError if it fails, crashes or hangs."""
        self.ensure_loaded()
        assert self._worker is not None
        return Sample.from_dict(self._worker.call(request_message(request))["sample"])

    def work(self, request: GenerationRequest) -> tuple[Sample, dict[str, Any]]:
        """One untimed generation under the work recorder in the worker: (sample, profile data)."""
        self.ensure_loaded()
        assert self._worker is not None
        return work_answer(self._worker.call(work_message(request)))

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
