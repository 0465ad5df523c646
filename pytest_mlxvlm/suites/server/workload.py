"""Jobs for the load generators (no pytest here): one stamped image and prompt per request (the
concurrency, rate and soak cases), or the requests and sessions of a workload file, each turn of
a session sent with the conversation before it (the first turn's image again)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from ...config.settings import Conversation, Turn, WorkloadFile
from ...config.settings import Resolution
from .client import ImageVariants, chat_body
from .load import Job, SendOne, single


def one_image_jobs(model: str, prompt: str, image: Path | None, max_tokens: int,
                   eos_ids: list[int], label: str) -> Callable[[int], Job]:
    """Job i: ``prompt`` with ``image`` (a distinct corner stamp per request, so a server's
    vision cache cannot answer it from an earlier request)."""
    variants = ImageVariants(image)

    def job_at(i: int) -> Job:
        return single(chat_body(model, prompt, variants.next_url(), max_tokens, eos_ids),
                      {"image": label})
    return job_at


class WorkloadJobs:
    """Job i is conversation i of the workload (cycling when more are asked for than it holds).
    Synthetic sizes become the plugin's pattern at that size, a file is read, a URL passed
    through; each request's images get a distinct stamp, a session's turns share theirs."""

    def __init__(self, work: WorkloadFile, model: str, max_tokens: int, eos_ids: list[int],
                 image_dir: Path, source: Path | None = None) -> None:
        self.work, self.model, self.max_tokens, self.eos_ids = work, model, max_tokens, eos_ids
        self.image_dir, self.source = image_dir, source
        self._variants: dict[str, ImageVariants] = {}
        self._lock = threading.Lock()

    def _url(self, image: str | Resolution) -> str:
        if isinstance(image, str) and image.startswith(("http:", "https:", "data:")):
            return image
        key = image.id if isinstance(image, Resolution) else image
        with self._lock:
            variants = self._variants.get(key)
            if variants is None:
                if isinstance(image, Resolution):
                    from ...measure.images import image_file

                    path = image_file(image, self.image_dir, self.source)
                else:
                    path = Path(image)
                variants = self._variants[key] = ImageVariants(path)
        url = variants.next_url()
        assert url is not None
        return url

    def body(self, turn: Turn, urls: list[str], history: list[dict[str, Any]]) -> bytes:
        body = chat_body(self.model, turn.text, urls or None, turn.max_tokens or self.max_tokens, self.eos_ids)
        if not history:
            return body
        data = json.loads(body)
        data["messages"] = history + data["messages"]
        return json.dumps(data).encode()

    def __call__(self, i: int) -> Job:
        conv: Conversation = self.work.conversations[i % len(self.work.conversations)]

        def job(send_one: SendOne) -> None:
            history: list[dict[str, Any]] = []
            for k, turn in enumerate(conv.turns):
                urls = [self._url(image) for image in turn.images]
                body = self.body(turn, urls, history)
                again = k and not turn.images and conv.turns[0].images
                label = f"{conv.turns[0].describe_images()} again" if again else turn.describe_images()
                meta = {"images": label, "prompt_chars": len(turn.text),
                        "max_tokens": turn.max_tokens or self.max_tokens}
                if conv.multi_turn:
                    meta.update(session=conv.session_id, turn=k + 1)
                timing = send_one(body, meta)
                history += json.loads(body)["messages"][len(history):]
                history.append({"role": "assistant", "content": timing.text})
        return job


def expected_tokens(work: WorkloadFile, max_tokens: int) -> set[int]:
    """The output lengths a workload asks for (to check that the server kept them)."""
    return {t.max_tokens or max_tokens for c in work.conversations for t in c.turns}
