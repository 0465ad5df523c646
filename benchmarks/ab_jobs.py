"""docs/ab.md "Measured" and docs/benchmarks.md "Paired A/B gating on the H200": A/A and A/B jobs of the paired gate per A/B order (docs/results/*/ab-*).

A/A and A/B jobs of the paired gate on real code: how often unchanged code fails, how often
a committed slowdown is caught, how often a job ends inconclusive, per A/B order.

    python -m benchmarks.ab_jobs build SCRATCH [--mlp F] [--cols N]
    python -m benchmarks.ab_jobs record SCRATCH OUT [--model M] [--sizes 224x224,1024x1024]
                                        [--order turns|duet|staggered|barrier] [--steps N]
                                        [--tokens 64] [--time-limit S]
                                        [--jobs N] [--pairs 20:40] [--estimators fast,median]
                                        [--until-missed]
    python -m benchmarks.ab_jobs judge OUT [OUT ...] [--jobs 20] [--pairs 20:40] [--alpha 0.05]

``build`` makes a scratch git repository holding a copy of the installed mlx-vlm's sources:
commit 1 is that code (the base), commit 2 adds a slowdown to Qwen3-VL's language model in the
code itself (the first F x layers run their MLP twice; after the final norm, the hidden states
are multiplied by the first N rows of the token embedding, a share of the LM head's work that
needs no new memory; for unquantized embeddings only). ``record`` checks both commits out as
worktrees and starts measuring workers of the plugin (``python -m
pytest_mlxvlm.measure.worker``, the worktree first on the path). In ``--order turns`` three take
turns, one generation at a time (A and A' on the base, B on the head; the order rotates through
all six permutations): one JSON line per triple per size. In the orders at once (``duet``,
``staggered``, ``barrier``) four: A and A' (the A/A job's pair), A3 and B (the A/B job's pair).
Two workers generate together exactly as a job's pair does (``gate.abmode.measure_at_once``,
the plugin's own function): each step records an A/A' pair and an A3/B pair (which comes first
alternates, and who is asked first follows ABBA), one JSON line per pair per size with its wall
time; the other pair waits meanwhile, so every worker generates once a step, as in a job of its
own. (Recordings before 2026-12-06 had three workers and A, twice a step, in both pairs; on
H100s A prefilled 4-6% faster than A' and B at 1024², and A/A jobs failed on TTFT.) Lines are
appended, so a recording resumes where it stopped, from a copy of committed files too
(``--time-limit`` ends it cleanly, counted from the start, loading included). ``judge`` cuts
the recording into consecutive jobs and judges each exactly as ``pytest --mlx-ab-base`` would
(the same ``run_pairs`` stopping rule from MIN pairs, checked every 5, up to MAX; the same
``judge_pairs`` decision at the same family-wise level), A against A' for the A/A jobs and A
against B for the A/B jobs; a job fails when any of its sizes fails, and is inconclusive when
none fails and one is inconclusive. The only difference from separate jobs: the workers are
loaded once for all jobs (in turns, three take turns instead of two), and the A/A and A/B pairs
take turns on one device.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_mlxvlm.common import machine
from pytest_mlxvlm.common.stats import per_comparison_alpha
from pytest_mlxvlm.config.settings import AB_ESTIMATORS, AB_ORDERS, DEFAULT_PROMPT, parse_resolutions
from pytest_mlxvlm.config.tolerances import AB_TOLERANCES
from pytest_mlxvlm.measure.workers import WorkerProcess, plugin_copy

from .ab_judge import (AA_FAILED_MAX, AA_INCONCLUSIVE_MAX, AB_MISSED_MAX, ALPHA, _lines, _plan, _sizes,
                       cut_jobs, judge_recording, missed)

LANGUAGE = "mlx_vlm/models/qwen3_vl/language.py"
SIDES = ("a", "a2", "b")  # turns: three workers take turns
AT_ONCE_SIDES = ("a", "a2", "a3", "b")  # the orders at once: an A/A job's pair and an A/B job's pair


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=pytest-mlxvlm", "-c", "user.email=bench@localhost", "commit", "-qm", message)


def slow_patch(source: str, mlp: float, cols: int) -> str:
    """Qwen3-VL's language model with extra work committed in its code."""
    source = source.replace(
        "        self.mlp = MLP(args.hidden_size, args.intermediate_size)\n",
        "        self.mlp = MLP(args.hidden_size, args.intermediate_size)\n"
        "        self.layer_idx = layer_idx\n", 1)
    source = source.replace(
        "        r = self.mlp(self.post_attention_layernorm(h))\n        out = h + r\n",
        "        r = self.mlp(self.post_attention_layernorm(h))\n"
        f"        if self.layer_idx < round({mlp!r} * self.args.num_hidden_layers):  # slower head\n"
        "            r = r + 0 * self.mlp(self.post_attention_layernorm(h))\n"
        "        out = h + r\n", 1)
    if cols:
        source = source.replace(
            "            return self.norm(h)\n",
            "            h = self.norm(h)\n"
            f"            waste = h @ self.embed_tokens.weight[:{cols}].T  # slower head\n"
            "            return h + 0 * waste.sum(axis=-1, keepdims=True)\n", 1)
    if "slower head" not in source:
        raise SystemExit(f"the slowdown could not be applied to {LANGUAGE}: mlx-vlm's code changed")
    return source


def build(scratch: Path, mlp: float, cols: int) -> Path:
    import mlx_vlm

    repo = scratch / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(Path(mlx_vlm.__file__).parent, repo / "mlx_vlm",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(scratch, "init", "-q", str(repo))
    _commit(repo, "base: mlx-vlm as installed")
    target = repo / LANGUAGE
    target.write_text(slow_patch(target.read_text(), mlp, cols))
    _commit(repo, f"head: slowdown mlp:{mlp} cols:{cols}")
    print(f"built {repo}: base {_git(repo, 'rev-parse', 'HEAD~1')[:10]}, head {_git(repo, 'rev-parse', 'HEAD')[:10]}")
    return repo


def _step_pairs(i: int, sides: tuple[str, ...] = AT_ONCE_SIDES) -> list[tuple[str, str]]:
    """The two pairs of step ``i`` in the orders at once, who is asked first in each (ABBA over
    the steps, as ``run_pairs`` asks), and which pair comes first (alternating). With four
    workers the A/B pair is A3 with B, so every worker generates once a step, as in a job of its
    own; recordings of three workers (before 2026-12-06) shared A between both pairs."""
    base = "a3" if "a3" in sides else "a"
    first = i % 4 in (0, 3)
    pairs = [("a", "a2") if first else ("a2", "a"), (base, "b") if first else ("b", base)]
    return pairs if i % 2 == 0 else pairs[::-1]


def _complete(out: Path, jobs: int, pairs: str, estimators: tuple[str, ...] = AB_ESTIMATORS,
              until_missed: bool = False) -> tuple[set[str], str]:
    """The streams (``a2``: A/A, ``b``: A/B) whose recorded pairs already hold ``jobs`` jobs, cut
    by each of ``estimators`` (one estimator's A/A jobs can need more pairs than another's: on
    the H100 the fast end's took 26-35 pairs where the median's took 20). With
    ``until_missed``, both are complete once every estimator's jobs already miss the acceptance
    (``missed``), and the reason is returned with them."""
    sizes = _sizes(out)
    if not jobs or not sizes:
        return set(), ""
    family = per_comparison_alpha(ALPHA, len(sizes) * len(AB_TOLERANCES))
    cuts = {(side, estimator): cut_jobs([out], side, sizes, _plan(pairs, estimator), family, jobs)
            for side in ("a2", "b") for estimator in estimators}
    if until_missed:
        reasons = [missed(cuts["a2", e], cuts["b", e]) for e in estimators]
        if all(reasons):
            return {"a2", "b"}, "; ".join(f"{e}: {r}" for e, r in zip(estimators, reasons))
    return {side for side in ("a2", "b") if all(len(cuts[side, e]) >= jobs for e in estimators)}, ""


def record(scratch: Path, out: Path, model: str, sizes: str, steps: int, tokens: int,
           time_limit: float, warmup: int, order: str = "turns", jobs: int = 0, pairs: str = "20:40",
           estimators: tuple[str, ...] = AB_ESTIMATORS, until_missed: bool = False) -> None:
    """Record ``steps`` triples (turns) or A/A' + A/B pairs (the orders at once) per size. With
    ``jobs``, the orders at once stop recording a stream once its pairs hold that many jobs by
    each of ``estimators`` (``judge``'s cut with ``pairs``, checked every 10 steps), and end when
    both do; with ``until_missed`` too, they end as soon as the jobs cut so far miss issue 26's
    acceptance whatever the rest would do (an order that cannot be the default needs no more)."""
    from pytest_mlxvlm.gate.abmode import measure_at_once
    from pytest_mlxvlm.measure.images import image_file

    if order not in AB_ORDERS:
        raise SystemExit(f"--order must be one of {', '.join(AB_ORDERS)}, got {order!r}")
    unknown = [e for e in estimators if e not in AB_ESTIMATORS]
    if unknown or not estimators:
        raise SystemExit(f"--estimators takes some of {', '.join(AB_ESTIMATORS)}, got {','.join(estimators)!r}")
    repo = scratch / "repo"
    out.mkdir(parents=True, exist_ok=True)
    sides = SIDES if order == "turns" else AT_ONCE_SIDES
    recording = {"order": order, "model": model, "tokens": tokens,
                 "head": _git(repo, "log", "-1", "--format=%s", "HEAD"),
                 "chip": machine.identity()["key"],  # an H100's rounds never join an H200's
                 "workers": list(sides)}
    earlier = json.loads((out / "workers.json").read_text()) if (out / "workers.json").exists() else {}
    earlier.setdefault("workers", list(SIDES))  # recorded before the at-once orders had four workers
    for key, value in recording.items():  # a resumed recording must be the same experiment
        if key in earlier and earlier[key] != value and any(out.glob("rounds-*.jsonl")):
            raise SystemExit(f"{out} was recorded with {key} {earlier[key]!r}, not {value!r}: "
                             "record into another folder")
    work = Path(tempfile.mkdtemp(prefix="ab-jobs-"))
    trees = {"base": work / "base", "head": work / "head"}
    _git(repo, "worktree", "add", "--detach", str(trees["base"]), "HEAD~1")
    _git(repo, "worktree", "add", "--detach", str(trees["head"]), "HEAD")
    code = str(plugin_copy(work))
    workers = {side: WorkerProcess(side, sys.executable, [code, str(trees["head" if side == "b" else "base"])],
                                   log=out / f"worker-{side}.log") for side in sides}
    start = time.perf_counter()
    try:
        meta = {}
        for side, worker in workers.items():
            meta[side] = {**worker.call({"op": "hello"}), **worker.call({"op": "load", "spec": model, "side": side})}
        (out / "workers.json").write_text(json.dumps({**meta, **recording}, indent=2))
        orders = list(itertools.permutations(sides))
        cases = []
        for resolution in parse_resolutions(sizes):
            image = image_file(resolution, work)
            request = {"op": "measure", "image": str(image), "prompt": DEFAULT_PROMPT, "max_tokens": tokens}
            path = out / f"rounds-{resolution.id}.jsonl"
            for _ in range(warmup):
                for worker in workers.values():
                    worker.call(request)
            cases.append((resolution.id, request, path))
        # lines recorded per size (a resumed recording): triples, and pairs of A with A' and with B
        counts = {size: {"all": len(lines), **{o: sum(o in line for line in lines) for o in ("a2", "b")}}
                  for size, _, path in cases for lines in [_lines(path)]}
        complete, why = _complete(out, jobs, pairs, estimators, until_missed) if order != "turns" else (set(), "")
        fresh = 0  # pairs recorded since the last look at the jobs
        for i in range(steps):  # the sizes take turns too, step by step
            if fresh and i % 10 == 0:
                (complete, why), fresh = _complete(out, jobs, pairs, estimators, until_missed), 0
            if complete == {"a2", "b"}:
                print(f"the acceptance is already missed ({why}) after {time.perf_counter() - start:.0f} s"
                      if why else f"both streams hold {jobs} jobs after {time.perf_counter() - start:.0f} s")
                return
            for size, request, path in cases:
                if time.perf_counter() - start > time_limit:
                    print(f"time limit after {time.perf_counter() - start:.0f} s: " + ", ".join(
                        f"{c[0]} {counts[c[0]]['all']} lines" for c in cases))
                    return
                if order == "turns":
                    if i < counts[size]["all"]:
                        continue
                    sequence = orders[i % len(orders)]
                    triple = {side: workers[side].call(request)["sample"] for side in sequence}
                    _append(path, {"order": list(sequence), **triple})
                    counts[size]["all"] += 1
                    continue
                for pair in _step_pairs(i, sides):
                    other = next(side for side in pair if side in ("a2", "b"))
                    if counts[size][other] > i or other in complete:
                        continue  # recorded before (a resumed recording), or enough jobs
                    began = time.perf_counter()
                    answers = measure_at_once(workers, pair, {side: request for side in pair}, order)
                    _append(path, {"order": list(pair), **{side: answers[side]["sample"] for side in pair},
                                   "held_s": {side: answers[side].get("held_s", 0.0) for side in pair},
                                   "wall_s": time.perf_counter() - began})
                    counts[size][other] += 1
                    counts[size]["all"] += 1
                    fresh += bool(jobs)
        print(f"{steps} steps per size")
    finally:
        for worker in workers.values():
            worker.stop()
        for tree in trees.values():
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("scratch", type=Path)
    b.add_argument("--mlp", type=float, default=0.1)
    b.add_argument("--cols", type=int, default=0)
    r = sub.add_parser("record")
    r.add_argument("scratch", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--model", default="synthetic:tiny")
    r.add_argument("--sizes", default="224x224,1024x1024")
    r.add_argument("--steps", "--triples", dest="steps", type=int, default=400,
                   help="triples (turns) or A/A' + A/B pairs (the orders at once) per size")
    r.add_argument("--tokens", type=int, default=64)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--time-limit", type=float, default=math.inf)
    r.add_argument("--jobs", type=int, default=0,
                   help="the orders at once: stop a stream (A/A or A/B) once it holds this many jobs")
    r.add_argument("--pairs", default="20:40", help="the jobs' pairs per case, as judge cuts them (with --jobs)")
    r.add_argument("--estimators", default=",".join(AB_ESTIMATORS),
                   help="with --jobs: a stream is complete when it holds the jobs by each of these "
                        "estimators' cuts (comma-separated; all by default)")
    r.add_argument("--until-missed", action="store_true",
                   help="with --jobs: end as soon as the jobs so far miss the acceptance (A/A: at most "
                        f"{AA_FAILED_MAX} failed and {AA_INCONCLUSIVE_MAX} inconclusive; A/B: at most "
                        f"{AB_MISSED_MAX} not failed), by each estimator's cut")
    r.add_argument("--order", choices=AB_ORDERS, default="turns",
                   help="turns: the three workers one at a time; duet, staggered, barrier: two at once "
                        "as a job's pair (--mlx-ab-order)")
    j = sub.add_parser("judge")
    j.add_argument("out", type=Path, nargs="+")
    j.add_argument("--jobs", type=int, default=20)
    j.add_argument("--pairs", default="20:40")
    j.add_argument("--alpha", type=float, default=ALPHA)
    j.add_argument("--estimator", choices=AB_ESTIMATORS, default="fast")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.scratch, args.mlp, args.cols)
    elif args.command == "record":
        record(args.scratch, args.out, args.model, args.sizes, args.steps, args.tokens,
               args.time_limit, args.warmup, args.order, args.jobs, args.pairs,
               tuple(e for e in args.estimators.split(",") if e), args.until_missed)
    else:
        print(judge_recording(args.out, args.jobs, args.pairs, args.alpha, args.estimator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
