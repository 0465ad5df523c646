"""The ``mlx_cache`` fixture's object and the choice of prefix-cache engines."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from ..results import StepResult
from .cache import VLLM_MLX_INSTALL, CacheSession, builtin_engines, judge

engines_key = pytest.StashKey[dict]()
expect_key = pytest.StashKey[dict]()


def choose_engines(config: pytest.Config, wanted_entries: list[str] | None) -> dict[str, Any]:
    """The engines to run the cache suite with: name -> factory. Raises ValueError."""
    known: dict[str, Any] = dict(builtin_engines())
    for offered in config.hook.pytest_mlxvlm_cache_engines(config=config):
        known.update(offered or {})
    wanted: list[str] = []
    for entry in wanted_entries or ["all"]:
        wanted += [w.strip() for w in entry.split(",") if w.strip()]
    if "all" in wanted:
        return known
    chosen = {}
    for name in wanted:
        if name in known:
            chosen[name] = known[name]
        elif name == "vllm-mlx":
            raise ValueError(f"cache engine 'vllm-mlx' needs the vllm_mlx package: {VLLM_MLX_INSTALL}")
        else:
            raise ValueError(f"unknown cache engine {name!r}; choose from {', '.join(sorted(known))} or all")
    return chosen


def parse_expectations(lines: list[str]) -> dict[tuple[str, str], str]:
    """``ENGINE: STEP = OUTCOME`` lines of the ``mlx_cache_expect`` ini setting."""
    out = {}
    for line in lines or []:
        engine, sep, rest = line.partition(":")
        step, sep2, outcome = rest.rpartition("=")
        outcome = outcome.strip().upper()
        if not sep or not sep2 or outcome not in ("HIT", "PARTIAL", "MISS"):
            raise ValueError(f"bad mlx_cache_expect line {line!r}: write 'ENGINE: STEP = HIT|PARTIAL|MISS'")
        out[(engine.strip(), step.strip())] = outcome
    return out


def start_session(config: pytest.Config, name: str, loaded: Any,
                  measure: Callable[[Any], Any]) -> CacheSession:
    """A fresh engine ``name`` on a loaded model; fails the test if the engine cannot start."""
    factory = config.stash[engines_key][name]
    try:
        return CacheSession(loaded.model, loaded.processor, factory(), measure=measure)
    except Exception as exc:  # noqa: BLE001 - an engine that cannot start fails its tests
        error = f"cache engine {name!r} could not start: {type(exc).__name__}: {exc}"
    pytest.fail(error, pytrace=False)


class MlxCache:
    """Runs cache steps through one engine; ``check()`` fails the test with every failed step."""

    def __init__(self, request: pytest.FixtureRequest, session: CacheSession, engine_name: str) -> None:
        self.request = request
        self.session = session
        self.engine = engine_name
        self._overrides = {step: o for (eng, step), o in request.config.stash[expect_key].items()
                           if eng == engine_name}

    def expected(self, step: str, default: str) -> str:
        """The expected outcome of a step: ini and hook overrides over the default semantics."""
        expectations = {step: self._overrides.get(step, default)}
        self.request.config.hook.pytest_mlxvlm_cache_expectations(
            engine=self.engine, expectations=expectations
        )
        return expectations[step]

    def step(self, name: str, image: Any, prompt: str, expect: str, description: str = "") -> StepResult:
        """One real generation through the engine and a cold one of the same input."""
        return self.session.step(name, image, prompt, self.expected(name, expect), description)

    def run(self, image: Any, prompt: str, name: str | None = None, description: str = "") -> StepResult:
        """One real generation through the engine: its outcome (HIT, PARTIAL, MISS) and evidence."""
        return self.session.step(name or f"step {len(self.steps) + 1}", image, prompt, None,
                                 description)

    def expect(self, result: StepResult, outcome: str) -> None:
        """Fail now unless the step had ``outcome`` and answered as a cold run does."""
        if not judge(result, self.expected(result.step, outcome)):
            pytest.fail(result.message(), pytrace=False)

    @property
    def steps(self) -> list[StepResult]:
        return self.session.steps

    def check(self) -> None:
        """Fail the test with every failed step."""
        failed = self.session.failed
        if failed:
            lines = [f"{len(failed)} of {len(self.steps)} cache steps failed for engine "
                     f"{self.engine!r}:"] + [f"  {s.message()}" for s in failed]
            pytest.fail("\n".join(lines), pytrace=False)
