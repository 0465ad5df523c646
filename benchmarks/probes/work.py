"""The work profile of a real generation, and how injected regressions show in it (issue 25).

Loads a model the way the plugin does, runs one greedy generation per image size under the work
recorder (pytest_mlxvlm.measure.recorder) and prints its profile: the MLX primitives, evals, async
evals and host syncs of the preprocessing, the prefill, the usual decode step and the steps that
differ. Then, at the first image size, applies regressions to the loaded model and mlx-vlm at
runtime, one at a time, and prints each one's difference to the unchanged profile
(pytest_mlxvlm.gate.work), whether the recorded generation's tokens are those of an unrecorded
one, and what recording cost:

- ``elementwise``: 60 extra multiplies (by ones) after the final norm, in decode steps only;
- ``mlp-twice``: the first decoder layer's MLP computed twice (benchmarks/slowdown.py ``mlp:``);
- ``patch-embed``: an extra pass of the vision tower's patch embedding (prefill only);
- ``cache-eval``: the KV cache state evaluated every token instead of every 50;
- ``eval-not-async``: mlx-vlm's ``mx.async_eval`` replaced by ``mx.eval``;
- ``host-sleep``: a host-only sleep of 0.5 ms per token (no MLX work: invisible by design).

    python -m benchmarks.probes.work
    python -m benchmarks.probes.work --resolutions 224x224 --tokens 300 --json work.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any, Callable

from .._common import parser
from pytest_mlxvlm.config.settings import DEFAULT_PROMPT, parse_resolution
from pytest_mlxvlm.gate.work import compare_profiles, describe, describe_tokens
from pytest_mlxvlm.measure.images import image_file
from pytest_mlxvlm.measure.recorder import WorkRecorder, profile_key
from pytest_mlxvlm.measure.work import WorkProfile, is_view
from pytest_mlxvlm.models import loading


def generate(loaded: Any, image: Path, max_tokens: int, recorder: WorkRecorder | None = None) -> dict[str, Any]:
    """One greedy generation of exactly ``max_tokens`` tokens, as the runner measures it, marking
    each streamed token on the recorder. Returns the tokens, the prompt's size and the seconds."""
    import mlx.core as mx
    from mlx_vlm import stream_generate
    from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

    from pytest_mlxvlm.measure.runner import fixed_output_length, format_prompt

    model, processor = loaded.model, loaded.processor
    formatted = format_prompt(model, processor, DEFAULT_PROMPT, 1)
    image_token = getattr(model.config, "image_token_index", None) or getattr(model.config, "image_token_id", None)
    tokens: list[int] = []
    mx.synchronize()
    with fixed_output_length(processor), (recorder or nullcontext()):
        start = time.perf_counter()
        if recorder is not None:
            recorder.phase("preprocess")
        inputs = prepare_inputs(processor, images=[str(image)], prompts=formatted, image_token_index=image_token,
                                add_special_tokens=should_add_special_tokens(model.config.model_type, processor))
        input_ids = inputs["input_ids"]
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values", "attention_mask")}
        mx.eval(input_ids, *(v for v in extra.values() if isinstance(v, mx.array)))
        if recorder is not None:
            recorder.phase("prefill")
        result = None
        for result in stream_generate(model, processor, formatted, input_ids=input_ids,
                                      pixel_values=inputs.get("pixel_values"), mask=inputs.get("attention_mask"),
                                      max_tokens=max_tokens, temperature=0.0, **extra):
            if recorder is not None:
                recorder.mark_token(result.generation_tokens - 1)
            if result.generation_tokens > len(tokens):
                tokens.append(int(result.token))
        seconds = time.perf_counter() - start
    image_tokens = int((input_ids == image_token).sum().item()) if image_token is not None else 0
    return {"tokens": tokens, "prompt_tokens": int(result.prompt_tokens) if result else 0,
            "image_tokens": image_tokens, "seconds": seconds}


# --- injected regressions: each applies itself and returns its undo ---------------------------


def _elementwise(loaded: Any, count: int = 60) -> Callable[[], None]:
    import mlx.core as mx
    import mlx.nn as nn

    inner = loaded.model.language_model.model
    norm = inner.norm
    ones = mx.ones((1, 1, norm.weight.shape[0]), dtype=norm.weight.dtype)
    mx.eval(ones)

    class ExtraMultiplies(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = norm

        def __call__(self, x: Any) -> Any:
            y = self.inner(x)
            if y.shape[1] == 1:  # a decode step: one new token
                for _ in range(count):
                    y = y * ones
            return y

    inner.norm = ExtraMultiplies()

    def undo() -> None:
        inner.norm = norm

    return undo


def _mlp_twice(loaded: Any) -> Callable[[], None]:
    from .slowdown import inject

    layers = len(loaded.model.language_model.model.layers)
    return inject(loaded.model, f"mlp:{1 / layers}")


def _patch_embed(loaded: Any) -> Callable[[], None]:
    embed_class = type(loaded.model.vision_tower.patch_embed)
    original = embed_class.__call__

    def twice(self: Any, x: Any) -> Any:
        y = original(self, x)
        return y + 0 * original(self, x)

    embed_class.__call__ = twice

    def undo() -> None:
        embed_class.__call__ = original

    return undo


def _cache_eval(loaded: Any) -> Callable[[], None]:
    from mlx_vlm.generate import ar

    interval = ar.DEFAULT_CACHE_EVAL_INTERVAL
    ar.DEFAULT_CACHE_EVAL_INTERVAL = 1

    def undo() -> None:
        ar.DEFAULT_CACHE_EVAL_INTERVAL = interval

    return undo


class _EvalNotAsync:
    """mlx.core for mlx-vlm's generation loop, its async_eval an eval (looked up at each call, so
    a recorder's patch of mx.eval is seen)."""

    def __getattr__(self, name: str) -> Any:
        import mlx.core as mx

        return getattr(mx, "eval" if name == "async_eval" else name)


def _eval_not_async(loaded: Any) -> Callable[[], None]:
    from mlx_vlm.generate import ar

    module = ar.mx
    ar.mx = _EvalNotAsync()

    def undo() -> None:
        ar.mx = module

    return undo


def _host_sleep(loaded: Any, seconds: float = 0.0005) -> Callable[[], None]:
    import mlx.nn as nn

    inner = loaded.model.language_model.model
    norm = inner.norm

    class Sleepy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = norm

        def __call__(self, x: Any) -> Any:
            time.sleep(seconds)
            return self.inner(x)

    inner.norm = Sleepy()

    def undo() -> None:
        inner.norm = norm

    return undo


INJECTIONS: dict[str, Callable[[Any], Callable[[], None]]] = {
    "elementwise": _elementwise,
    "mlp-twice": _mlp_twice,
    "patch-embed": _patch_embed,
    "cache-eval": _cache_eval,
    "eval-not-async": _eval_not_async,
    "host-sleep": _host_sleep,
}


# --- printing ---------------------------------------------------------------------------------


def _counts(work: Any, top: int = 8) -> str:
    prims = sorted(work.primitives.items(), key=lambda kv: (-kv[1], kv[0]))
    views = sum(v for k, v in work.primitives.items() if is_view(k))
    shown = ", ".join(f"{v} {k}" for k, v in prims[:top]) + (", ..." if len(prims) > top else "")
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(work.sync_kinds.items()))
    return (f"{work.nodes} nodes ({views} views), {work.evals} eval, {work.async_evals} async_eval, "
            f"{work.syncs} syncs{f' ({kinds})' if kinds else ''}; {shown}")


def print_profile(profile: WorkProfile) -> None:
    print(f"  hash {profile.hash}; {profile.tokens} tokens, {profile.prompt_tokens} prompt tokens, "
          f"{profile.decode_steps} decode steps, key {json.dumps(profile.key)}")
    for name, work in profile.phases.items():
        print(f"  {name:<12} {work.hash}  {_counts(work)}")
    usual = profile.decode_steps - len(profile.events)
    print(f"  events: {len(profile.events)} of {profile.decode_steps} steps differ from the usual step "
          f"({usual} are usual)")
    from pytest_mlxvlm.gate.work import PhaseDelta, describe_delta

    for event in profile.events:
        print(f"    step {event.step}: {describe_delta(PhaseDelta.of(event.delta))}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolutions", default="224x224,1024x1024")
    cli.add_argument("--tokens", type=int, default=200, help="generated tokens per generation")
    cli.add_argument("--rounds", type=int, default=3, help="recorded and unrecorded rounds at the first size")
    cli.add_argument("--injections", default=",".join(INJECTIONS), help="comma-separated, or none")
    cli.add_argument("--json", type=Path, default=None, help="write the profiles and diffs here")
    args = cli.parse_args()
    began = time.perf_counter()
    loaded = loading.load(args.model)
    folder = Path(tempfile.mkdtemp(prefix="mlxvlm-work-"))
    out: dict[str, Any] = {"model": args.model, "tokens": args.tokens, "sizes": {}, "injections": {}}
    base: dict[str, Any] = {}
    for i, resolution in enumerate(args.resolutions.split(",")):
        image = image_file(parse_resolution(resolution), folder)
        generate(loaded, image, 4)  # the first run at a shape builds kernels
        rounds = args.rounds if i == 0 else 1
        plain = [generate(loaded, image, args.tokens) for _ in range(rounds)]
        profiles, recorded, overhead = [], [], []
        for _ in range(max(rounds, 2)):
            rec = WorkRecorder(first_phase="preprocess")
            run = generate(loaded, image, args.tokens, rec)
            key = profile_key(model=args.model, prompt_tokens=run["prompt_tokens"], image_tokens=run["image_tokens"],
                              image_size=resolution, tokens=args.tokens)
            profiles.append(rec.profile(prompt_tokens=run["prompt_tokens"], key=key))
            recorded.append(run)
            overhead.append(rec.overhead_s)
        profile = profiles[0]
        same = all(p.to_dict() == profile.to_dict() for p in profiles)
        identical = all(r["tokens"] == plain[0]["tokens"] for r in recorded)
        cost = _median([r["seconds"] for r in recorded]) / _median([r["seconds"] for r in plain]) - 1
        print(f"\n{args.model} at {resolution}, {args.tokens} tokens")
        print_profile(profile)
        print(f"  {len(profiles)} recorded rounds {'identical' if same else 'DIFFER'}; recorded tokens "
              f"{describe_tokens(plain[0]['tokens'], recorded[0]['tokens'])}; recording cost "
              f"{cost:+.1%} of a round (medians of {len(plain)} unrecorded rounds, "
              f"{_median([r['seconds'] for r in plain]):.2f} s, and {len(recorded)} recorded ones, "
              f"of which {_median(overhead):.2f} s reading graphs)")
        out["sizes"][resolution] = {"profile": profile.to_dict(), "rounds_identical": same,
                                    "tokens_identical": identical, "cost": cost,
                                    "seconds_plain": [r["seconds"] for r in plain],
                                    "seconds_recorded": [r["seconds"] for r in recorded]}
        if i == 0:
            base = {"image": image, "profile": profile, "tokens": plain[0]["tokens"], "resolution": resolution}
    names = [n for n in args.injections.split(",") if n and n != "none"]
    if names and base:
        print(f"\ninjected regressions at {base['resolution']}, against the unchanged profile:")
    for name in names:
        with ExitStack() as stack:
            stack.callback(INJECTIONS[name](loaded))
            plain_run = generate(loaded, base["image"], args.tokens)
            rec = WorkRecorder(first_phase="preprocess")
            run = generate(loaded, base["image"], args.tokens, rec)
        key = profile_key(model=args.model, prompt_tokens=run["prompt_tokens"], image_tokens=run["image_tokens"],
                          image_size=base["resolution"], tokens=args.tokens)
        diff = compare_profiles(base["profile"], rec.profile(prompt_tokens=run["prompt_tokens"], key=key))
        cost = run["seconds"] / plain_run["seconds"] - 1
        print(f"  {name:<15} {diff.verdict:<8} {describe(diff)}")
        print(f"  {'':<15} recorded vs unrecorded: {describe_tokens(plain_run['tokens'], run['tokens'])}; "
              f"vs unchanged model: {describe_tokens(base['tokens'], plain_run['tokens'])}; one round "
              f"{plain_run['seconds']:.2f} s unrecorded, {run['seconds']:.2f} s recorded ({cost:+.1%}, "
              f"{rec.overhead_s:.2f} s reading graphs)")
        out["injections"][name] = {"verdict": diff.verdict, "describe": describe(diff), "diff": diff.to_dict(),
                                   "tokens_identical": run["tokens"] == plain_run["tokens"],
                                   "cost": cost, "seconds_plain": plain_run["seconds"],
                                   "seconds_recorded": run["seconds"], "reading_s": rec.overhead_s}
    # a check that every injection was undone: the unchanged model's profile again
    if names and base:
        rec = WorkRecorder(first_phase="preprocess")
        run = generate(loaded, base["image"], args.tokens, rec)
        again = rec.profile(prompt_tokens=run["prompt_tokens"], key=base["profile"].key)
        print(f"  after undoing all: {describe(compare_profiles(base['profile'], again))}")
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
