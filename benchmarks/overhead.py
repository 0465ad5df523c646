"""docs/reference.md "Overhead" and docs/benchmarks.md "Overhead of the plugin": the runner against a bare loop.

The plugin's runner against a bare ``mlx_vlm.stream_generate`` loop, in one process.

Both generate the same number of greedy tokens from the same model, image and prompt, in
alternating order (bare first on even rounds, runner first on odd ones), and both compute
decode tok/s the same way: (tokens - 1) / (time of last token - time of first token).

    python -m benchmarks.overhead --model synthetic:tiny --rounds 30
    python -m benchmarks.overhead --work-profile     # the plugin's timed rounds after a profiled one

With ``--work-profile`` the plugin's last warmup round is recorded under the work recorder, as a
case's is (``--mlx-work`` gate or report), and its wall time is printed beside a plain round's:
the timed rounds that follow must be as fast as the bare loop's. Beside the ratio of medians, the
median of the per-round ratios (plugin / bare of the same round, so a drift of the machine cancels)
is given with its 95% bootstrap interval.
"""

from __future__ import annotations

import statistics
import time

from pytest_mlxvlm.config.settings import DEFAULT_PROMPT
from pytest_mlxvlm.measure.runner import format_prompt, measure_generation

from ._common import parser, prepare


def bare_loop(model, processor, prompt: str, image: str, max_tokens: int) -> dict[str, float]:
    """What a user would write: stream_generate and a clock."""
    from mlx_vlm import stream_generate

    start = time.perf_counter()
    first = last = None
    count = 0
    response = None
    for response in stream_generate(
        model, processor, prompt, image=[image], max_tokens=max_tokens, temperature=0.0
    ):
        now = time.perf_counter()
        if first is None:
            first = now
        if response.generation_tokens > count:
            count, last = response.generation_tokens, now
    end = time.perf_counter()
    return {
        "tokens": count,
        "generation_tps": (count - 1) / (last - first),
        "mlx_vlm_generation_tps": response.generation_tps,
        "ttft_s": first - start,
        "end_to_end_tps": count / (end - start),
    }


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolution", default="224x224")
    cli.add_argument("--max-tokens", type=int, default=128)
    cli.add_argument("--rounds", type=int, default=30)
    cli.add_argument("--warmup", type=int, default=2)
    cli.add_argument("--work-profile", action="store_true",
                     help="record the work profile in the plugin's last warmup round, as a case does")
    args = cli.parse_args()

    loaded, image, request = prepare(args.model, args.resolution, args.max_tokens)
    prompt = format_prompt(loaded.model, loaded.processor, DEFAULT_PROMPT, 1)

    def plugin() -> dict[str, float]:
        s = measure_generation(loaded.model, loaded.processor, request)
        return {"tokens": s.generation_tokens, "generation_tps": s.generation_tps,
                "ttft_s": s.ttft_s, "end_to_end_tps": s.end_to_end_tps}

    def bare() -> dict[str, float]:
        return bare_loop(loaded.model, loaded.processor, prompt, str(image), args.max_tokens)

    for _ in range(args.warmup):
        bare(), plugin()
    profiled = None
    if args.work_profile:
        from pytest_mlxvlm.measure.runner import record_work

        start = time.perf_counter()
        sample, work = record_work(loaded.model, loaded.processor, request, spec=args.model)
        profiled = (time.perf_counter() - start, sample.time_s, sum(work["phases"]["decode_step"]["primitives"].values()))
        start = time.perf_counter()
        plain = measure_generation(loaded.model, loaded.processor, request)
        plain_wall = time.perf_counter() - start
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "plugin": []}
    for i in range(args.rounds):
        order = [("bare", bare), ("plugin", plugin)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            runs[name].append(fn())

    print(f"model {args.model}, image {args.resolution}, {args.max_tokens} tokens, "
          f"{args.rounds} interleaved rounds after {args.warmup} warmup")
    if profiled is not None:
        wall, _, step_nodes = profiled
        print(f"profiled round (work recorder, {step_nodes} primitives a decode step): {wall:.3f} s wall; "
              f"a plain round after it: {plain_wall:.3f} s ({wall / plain_wall - 1:+.1%}); "
              f"plain tokens {plain.generation_tokens}")
    tokens = {name: {r["tokens"] for r in rs} for name, rs in runs.items()}
    print(f"tokens generated: bare {sorted(tokens['bare'])}, plugin {sorted(tokens['plugin'])}")
    medians = {}
    for metric in ("generation_tps", "end_to_end_tps", "ttft_s"):
        b = statistics.median(r[metric] for r in runs["bare"])
        p = statistics.median(r[metric] for r in runs["plugin"])
        medians[metric] = (b, p)
        print(f"{metric:>16}: bare {b:10.4f}  plugin {p:10.4f}  plugin/bare {p / b:.4f}")
    for name, rs in runs.items():
        print(f"{name:>6} decode tok/s per round: " + " ".join(f"{r['generation_tps']:.0f}" for r in rs))
    own = statistics.median(r["mlx_vlm_generation_tps"] for r in runs["bare"])
    print(f"mlx-vlm's own generation_tps (bare loop, counts the first token): {own:.4f}")
    b, p = medians["generation_tps"]
    diff = (p - b) / b * 100
    verdict = "within 2%" if abs(diff) <= 2 else "NOT within 2%"
    print(f"median decode tok/s: plugin {p:.2f} vs bare {b:.2f} ({diff:+.2f}%): {verdict}")
    from scipy.stats import bootstrap

    for metric in ("generation_tps", "end_to_end_tps"):
        ratios = [pr[metric] / br[metric] for pr, br in zip(runs["plugin"], runs["bare"])]
        mid = statistics.median(ratios)
        ci = bootstrap((ratios,), statistics.median, confidence_level=0.95, n_resamples=2000,
                       method="percentile", random_state=0).confidence_interval
        print(f"{metric}: median of per-round plugin/bare {mid - 1:+.2%} "
              f"(95% interval {ci.low - 1:+.2%} to {ci.high - 1:+.2%}, {len(ratios)} rounds)")


if __name__ == "__main__":
    main()
