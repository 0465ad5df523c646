"""``pytest-mlxvlm bisect GOOD BAD``: the commit that changed performance (asv's ``find``),
by the work profiles and paired A/B runs between commits, each step reported as it ends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config.settings import AB_ORDERS, DEFAULT_MAX_TOKENS, DEFAULT_PROMPT, ABPlan, SettingsError, parse_resolution
from ..config.tolerances import AB_TOLERANCES, ToleranceError, parse_tolerances

HELP = ("find the commit between GOOD and BAD that changed performance: a binary search, each step "
        "comparing GOOD with a commit (worker processes from git worktrees), exactly by their work "
        "profiles where the ends' work differs, otherwise by a paired A/B run; exit 0 with the "
        "culprit, 1 when GOOD and BAD do not differ at these settings, 3 when a step stays inconclusive")


def _pairs(value: str) -> tuple[int, int]:
    low, sep, high = value.partition(":")
    try:
        low_n = int(low)
        high_n = int(high) if sep else low_n
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: write MIN:MAX, e.g. 10:30") from None
    if not 2 <= low_n <= high_n <= 10_000:
        raise argparse.ArgumentTypeError(f"{value!r}: 2 <= MIN <= MAX <= 10000")
    return low_n, high_n


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{value!r}: between 0 and 86400 seconds")
    return seconds


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must not be negative")
    return n


EXIT_STATUS = ("Exit status: 0 the culprit found; 1 GOOD and BAD do not differ at these settings; 2 bad "
               "input or a worker that failed (one line on stderr); 3 a step stayed inconclusive in two A/B "
               "runs (the commits the culprit is among are printed); 130 interrupted (workers stopped, "
               "worktrees removed).")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``bisect`` subcommand and its documented arguments."""
    cmd = sub.add_parser("bisect", help=HELP, description=f"{HELP[0].upper()}{HELP[1:]}.", epilog=EXIT_STATUS)
    cmd.add_argument("good", help="a revision measured as the reference (older), e.g. a tag or a SHA")
    cmd.add_argument("bad", help="a later revision that measures differently, e.g. HEAD")
    cmd.add_argument("--model", required=True, metavar="SPEC",
                     help="the model both sides load, e.g. synthetic:tiny or mlx-community/...")
    cmd.add_argument("--resolution", default="224x224", metavar="WxH", help="the image size (default 224x224)")
    cmd.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, metavar="N",
                     help=f"tokens generated per request (default {DEFAULT_MAX_TOKENS})")
    cmd.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt (default: the suite's)")
    cmd.add_argument("--pairs", type=_pairs, default=(10, 30), metavar="MIN:MAX",
                     help="pairs per step: at least MIN, at most MAX, fewer once the verdict is clear "
                     "(default 10:30)")
    cmd.add_argument("--warmup", type=_count, default=1, metavar="N", help="warm-up pairs per step (default 1)")
    cmd.add_argument("--tolerance", action="append", default=[], metavar="METRIC=PCT",
                     help="a change this large counts (default: the A/B mode's, e.g. generation_tps=3)")
    cmd.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    cmd.add_argument("--order", choices=AB_ORDERS, default=ABPlan.order,
                     help="how a pair is measured: turns (one side after the other, ABBA), duet (both at "
                     "once), staggered (at once, the second when the first has its first token) or barrier "
                     "(both prefills in turn, then both decodes together)")
    cmd.add_argument("--budget", type=_seconds, default=ABPlan.budget_s, metavar="SECONDS",
                     help=f"time one step may measure (default {ABPlan.budget_s:.0f})")
    cmd.add_argument("--worker-timeout", type=_seconds, default=ABPlan.timeout_s, metavar="SECONDS",
                     help=f"a worker silent this long is stopped (default {ABPlan.timeout_s:.0f})")
    cmd.add_argument("--timing-only", action="store_true",
                     help="decide every step by an A/B run, even where the ends' work profiles differ "
                     "(by default a work change decides a step exactly, without timing; the profiles "
                     "are compared and shown either way)")
    cmd.add_argument("--repo", type=Path, default=Path("."), help="the git repository (default: here)")
    return cmd


def fail(message: str) -> int:
    print(f"pytest-mlxvlm: {message}", file=sys.stderr)
    return 2


def describe(step: Any, total: int) -> str:
    """One line per step: which commit, what decided it (the work profiles, exactly and untimed,
    or an A/B run's changes with their intervals), which side it is on, what is left."""
    from ..results import METRICS

    where = "ends" if step.number == 0 else f"{step.number}/{total}"
    head = f"{step.head.short} {step.head.subject}"[:72]
    undecided = step.timing is not None and step.timing.comparison.status == "inconclusive"
    side = "neither side: inconclusive" if undecided else "changed" if step.changed else "unchanged"
    after = f"-> {side}; {step.left} commit(s) left"
    if step.timing is None:
        return (f"step {where}: {head}: {step.work.line()} (by work profile, not timed; "
                f"{step.seconds:.0f} s) {after}")
    comparison = step.timing.comparison
    if comparison.status == "workload-changed":
        figures = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in comparison.workload_changes.items())
    else:
        figures = "; ".join(
            f"{METRICS[m.metric].label} {m.change * 100:+.1f}%"
            + (f" [{m.interval[0] * 100:+.1f}%, {m.interval[1] * 100:+.1f}%]" if m.interval else "")
            for m in comparison.metrics)
    details = [figures, f"{step.timing.pairs} pairs, {step.seconds:.0f} s", step.work.line(), "by timing"]
    return f"step {where}: {head}: {comparison.status} ({'; '.join(d for d in details if d)}) {after}"


def run(args: argparse.Namespace) -> int:
    """Resolve the commits, check the ends, halve until one commit is left."""
    from ..gate.abmode import ABSetupError
    from ..gate.bisect import Bisector, bisect, commits_between, expected_steps
    from ..measure.images import synthetic_image
    from ..measure.workers import WorkerError
    from ..results import GenerationRequest

    try:
        resolution = parse_resolution(args.resolution)
        tolerances = {**AB_TOLERANCES, **parse_tolerances(args.tolerance)}
    except (SettingsError, ToleranceError) as exc:
        return fail(f"bisect: {exc}")
    if not 0 < args.alpha < 1:
        return fail("bisect: --alpha is between 0 and 1, e.g. 0.05")
    if args.max_tokens <= 0:
        return fail("bisect: --max-tokens must be positive")
    repo = args.repo.resolve()
    try:
        good, bad, commits = commits_between(repo, args.good, args.bad)
    except (ABSetupError, OSError) as exc:
        return fail(f"bisect: {exc}")
    steps = expected_steps(len(commits))
    print(f"bisect: {len(commits)} commit(s) after {good.short} up to {bad.short}; the ends first, "
          f"then {steps} step(s); {args.model} at {resolution.id}, {args.max_tokens} tokens", flush=True)
    plan = ABPlan(base_rev=good.sha, min_pairs=args.pairs[0], max_pairs=args.pairs[1], budget_s=args.budget,
                  timeout_s=args.worker_timeout, order=args.order)
    bisector = Bisector(repo, args.model, GenerationRequest(None, args.prompt, args.max_tokens), plan,
                        tolerances={k: v for k, v in tolerances.items() if v is not None}, alpha=args.alpha,
                        warmup=args.warmup)
    try:
        image = bisector.scratch / "image.png"
        synthetic_image(resolution).save(image)
        bisector.request = GenerationRequest(image, args.prompt, args.max_tokens)
        result = bisect(bisector, good, bad, commits, use_work=not args.timing_only,
                        report=lambda step: print(describe(step, steps), flush=True))
    except (WorkerError, ABSetupError) as exc:
        return fail(f"bisect: {exc}")
    except KeyboardInterrupt:
        print("bisect: interrupted (workers stopped, worktrees removed)", file=sys.stderr)
        return 130
    finally:
        bisector.close()
    if result.undecided is not None:
        suspects = result.suspects
        among = (f"{suspects[0].short}" if len(suspects) == 1 else
                 f"the {len(suspects)} commits {suspects[0].short}..{suspects[-1].short}")
        print(f"bisect: stopped at {result.undecided.short}: inconclusive in two A/B runs (a change neither "
              f"called nor ruled out); the culprit is among {among}; more pairs (--pairs MIN:MAX) or more "
              f"tokens (--max-tokens) may decide it")
        return 3
    if result.culprit is None:
        print(f"bisect: {bad.short} does not differ from {good.short} at these settings "
              f"({result.verdict}): nothing to look for")
        return 1
    print(f"culprit: {result.culprit.sha} {result.culprit.subject} ({result.verdict} against "
          f"{good.short}; {result.search_steps} step(s) after the ends, by {result.decided_by})")
    return 0
