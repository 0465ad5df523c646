"""Prefix-cache steps through a server (no pytest here): the in-process cache suite's steps sent
as streamed HTTP requests.

Each step sends three requests of the same input: a cold one (a fresh ``X-APC-Tenant``, so the
server's prefix cache has nothing for it; the reference output), the step's own request (the
test's tenant, so its cache holds what the test sent before), and a second cold one whose TTFT
is the comparison (by then the server's vision-feature cache, keyed by pixels and shared by all
tenants, is as warm for it as for the step's request, so the difference is the prefix cache's).
The evidence is ``usage.prompt_tokens_details.cached_tokens``; the output is the first token's
log-probabilities (``logprobs``/``top_logprobs``) compared with the cold request's, or the text
where the server gives none.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...results import StepResult, image_list
from ..cache import LOGPROB_TOLERANCE, Expectation, conclude
from .client import Timing, chat_body
from .process import ServerError

TENANT_HEADER = "X-APC-Tenant"  # mlx_vlm.server salts its prefix cache with it (also X-Tenant-Id)
TOP_LOGPROBS = 20  # rivals of the first token asked for (mlx_vlm.server caps at --top-logprobs-k)
APC_SLACK = 16  # mlx_vlm.server's APC block size: prompt tokens a HIT may leave uncomputed
SERVER_CACHE_ARGS = ("--top-logprobs-k", str(TOP_LOGPROBS))  # mlx_vlm.server's, for the cache steps


def image_refs(image: Any, local: bool) -> list[str]:
    """The request's images: absolute file paths for a server on this machine (so a cache keyed
    by path is caught when the bytes change), else data URLs of the files' bytes."""
    refs = []
    for item in image_list(image):
        path = Path(item)
        if local:
            refs.append(str(path.resolve()))
            continue
        kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}.get(path.suffix.lower(), "png")
        refs.append(f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode())
    return refs


def _by_token(pairs: list[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for token, logprob in pairs:
        out.setdefault(token, []).append(logprob)
    return {token: sorted(values) for token, values in out.items()}


def compare_first_tokens(cached: Timing, cold: Timing,
                         tolerance: float = LOGPROB_TOLERANCE) -> tuple[bool, str]:
    """The first token's log-probabilities as a cold request's (within ``tolerance``; a different
    pick only at a near-tie), or, without log-probabilities, the same text."""
    mine, theirs = cached.first_logprobs, cold.first_logprobs
    if not mine or not theirs:
        if cached.text == cold.text:
            return True, ""
        index = next((i for i, (a, b) in enumerate(zip(cached.text, cold.text)) if a != b),
                     min(len(cached.text), len(cold.text)))
        return False, f"the generated text differs from character {index} (no log-probabilities)"
    (token, logprob), (cold_token, cold_logprob) = mine[0], theirs[0]
    if token != cold_token:
        rival = _by_token(theirs[1:]).get(token)
        if not rival or cold_logprob - rival[-1] > tolerance:
            return False, f"the first token is {token!r} ({logprob:.3g}), a cold request's {cold_token!r} ({cold_logprob:.3g})"
    worst = abs(logprob - cold_logprob) if token == cold_token else 0.0
    ours, cold_rivals = _by_token(mine[1:]), _by_token(theirs[1:])
    for name in ours.keys() & cold_rivals.keys():
        worst = max([worst, *(abs(a - b) for a, b in zip(ours[name], cold_rivals[name]))])
    if not worst <= tolerance:
        return False, f"first-token log-probabilities differ by up to {worst:.3g}"
    return True, ""


def _tenant() -> str:
    return f"mlxvlm-{uuid.uuid4().hex[:16]}"


@dataclass
class ServerCacheSession:
    """Runs cache steps through one server for one test (its own tenant: a fresh cache)."""

    server: Any  # an MlxServer: request(body, headers), request_model, eos_ids, started_here
    max_tokens: int = 8
    slack: int = APC_SLACK
    steps: list[StepResult] = field(default_factory=list)
    tenant: str = field(default_factory=_tenant)

    def _send(self, image: Any, prompt: str, tenant: str) -> Timing:
        body = chat_body(self.server.request_model, prompt, image_refs(image, self.server.started_here),
                         self.max_tokens, self.server.eos_ids, top_logprobs=TOP_LOGPROBS)
        return self.server.request(body, {TENANT_HEADER: tenant})

    def step(self, name: str, image: Any, prompt: str, expect: Expectation | str | None,
             description: str = "") -> StepResult:
        """A step's request and two cold ones of the same input; held to ``expect`` when given."""
        result = StepResult(step=name, description=description or name, expected="-")
        self.steps.append(result)
        try:
            cold = self._send(image, prompt, _tenant())
        except (ServerError, OSError) as exc:
            result.error = f"the input could not be run (cold, a fresh tenant): {exc}"
            return result
        try:
            sample = self._send(image, prompt, self.tenant)
            again = self._send(image, prompt, _tenant())
        except ServerError as exc:
            result.error = f"the server failed: {exc}"
            return result
        result.cached_tokens, result.prompt_tokens = sample.cached_tokens, sample.prompt_tokens
        result.ttft_s, result.cold_ttft_s = sample.ttft_s, again.ttft_s
        if not sample.cached_reported:
            result.error = ("the server reports no usage.prompt_tokens_details.cached_tokens: the "
                            f"outcome cannot be told (TTFT {sample.ttft_s * 1000:.0f} ms vs "
                            f"{again.ttft_s * 1000:.0f} ms cold)")
            return result
        if cold.cached_tokens or again.cached_tokens:
            result.error = (f"a cold request (a fresh {TENANT_HEADER}) reported "
                            f"{max(cold.cached_tokens, again.cached_tokens)} cached tokens: the server "
                            "shares its cache across tenants, so no request through it is cold")
            return result
        return conclude(result, self.slack, compare_first_tokens(sample, cold), expect)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if not s.passed]


PROBE_TEXT = ("Before any image is shown, read this paragraph twice and answer with one word. " * 4).strip()


def cache_probe(server: Any) -> str | None:
    """Whether a server reuses prompt tokens at all: one text prompt (several of the prefix
    cache's blocks long) sent twice under one tenant. None when the second request reported
    cached tokens (or the probe could not run: the steps then fail with the server's error);
    else the one-line reason to skip the cache steps."""
    tenant = _tenant()
    body = chat_body(server.request_model, PROBE_TEXT, None, 2, server.eos_ids)
    try:
        server.request(body, {TENANT_HEADER: tenant})
        again = server.request(body, {TENANT_HEADER: tenant})
    except ServerError:
        return None
    if again.cached_tokens > 0:
        return None
    seen = (f"a text prompt sent twice: 0 of its {again.prompt_tokens} prompt tokens cached"
            if again.cached_reported else "it reports no usage.prompt_tokens_details.cached_tokens")
    return (f"the server at {server.url} reused no cached tokens ({seen}); start it with its prefix "
            "cache on to check HIT/MISS")
