"""A/A and A/B jobs of the paired gate on real code: how often unchanged code fails, how often
a committed slowdown is caught.

    python -m benchmarks.ab_jobs build SCRATCH [--mlp F] [--cols N]
    python -m benchmarks.ab_jobs record SCRATCH OUT [--model M] [--sizes 224x224,1024x1024]
                                        [--triples N] [--tokens 64] [--time-limit S]
    python -m benchmarks.ab_jobs judge OUT [--jobs 20] [--pairs 10:40] [--alpha 0.05]

``build`` makes a scratch git repository holding a copy of the installed mlx-vlm's sources:
commit 1 is that code (the base), commit 2 adds a slowdown to Qwen3-VL's language model in the
code itself (the first F x layers run their MLP twice; after the final norm, the hidden states
are multiplied by the first N rows of the token embedding, a share of the LM head's work that
needs no new memory; for unquantized embeddings only). ``record`` checks both commits out as worktrees and starts three measuring workers of
the plugin (``python -m pytest_mlxvlm.worker``, the worktree first on the path): A and A' on
the base, B on the head. Rounds of the three take turns (the order rotates through all six
permutations; ``--concurrent``: the three generate at once; ``--staggered``: at once, each asked
when the one before has its first token), one JSON line per triple per size, appended, so a
recording resumes where it stopped (``--time-limit`` ends it cleanly). ``judge`` cuts the recording into consecutive jobs
and judges each exactly as ``pytest --mlx-ab-base`` would (the same ``run_pairs`` stopping rule
from MIN pairs, checked every 5, up to MAX; the same ``judge_pairs`` decision at the same
family-wise level), A against A' for the A/A jobs and A against B for the A/B jobs; a job
fails when any of its sizes fails. The only difference from separate jobs: three workers take
turns instead of two, and all jobs share one load of the model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from pytest_mlxvlm.abmode import judge_pairs, run_pairs
from pytest_mlxvlm.paired import AB_TOLERANCES, compare_paired
from pytest_mlxvlm.results import GenerationRequest, Sample
from pytest_mlxvlm.settings import ABPlan, DEFAULT_PROMPT, parse_resolutions
from pytest_mlxvlm.stats import per_comparison_alpha
from pytest_mlxvlm.workers import WorkerProcess, plugin_copy

LANGUAGE = "mlx_vlm/models/qwen3_vl/language.py"
SIDES = ("a", "a2", "b")


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


def record(scratch: Path, out: Path, model: str, sizes: str, triples: int, tokens: int,
           time_limit: float, warmup: int, concurrent: bool = False, staggered: bool = False) -> None:
    from pytest_mlxvlm.images import image_file

    repo = scratch / "repo"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ab-jobs-"))
    trees = {"base": work / "base", "head": work / "head"}
    _git(repo, "worktree", "add", "--detach", str(trees["base"]), "HEAD~1")
    _git(repo, "worktree", "add", "--detach", str(trees["head"]), "HEAD")
    code = str(plugin_copy(work))
    workers = {side: WorkerProcess(side, sys.executable, [code, str(trees["head" if side == "b" else "base"])],
                                   log=out / f"worker-{side}.log") for side in SIDES}
    start = time.perf_counter()
    try:
        meta = {}
        for side, worker in workers.items():
            meta[side] = {**worker.call({"op": "hello"}), **worker.call({"op": "load", "spec": model, "side": side})}
        (out / "workers.json").write_text(json.dumps(meta, indent=2))
        orders = list(itertools.permutations(SIDES))
        cases = []
        for resolution in parse_resolutions(sizes):
            image = image_file(resolution, work)
            request = {"op": "measure", "image": str(image), "prompt": DEFAULT_PROMPT, "max_tokens": tokens}
            path = out / f"rounds-{resolution.id}.jsonl"
            done = len(path.read_text().splitlines()) if path.exists() else 0
            for _ in range(warmup):
                for worker in workers.values():
                    worker.call(request)
            cases.append((resolution.id, request, path, done))
        for i in range(triples):  # the sizes take turns too, triple by triple
            for size, request, path, done in cases:
                if i < done:
                    continue
                if time.perf_counter() - start > time_limit:
                    print(f"time limit after {time.perf_counter() - start:.0f} s: "
                          + ", ".join(f"{c[0]} {len(c[2].read_text().splitlines()) if c[2].exists() else 0}"
                                      for c in cases) + " triples")
                    return
                order = orders[i % len(orders)]
                if staggered:  # at once, each asked when the one before has its first token
                    for k, side in enumerate(order):
                        last = k == len(order) - 1
                        workers[side].send(request if last else {**request, "first_token_event": True})
                        if not last:
                            workers[side].receive("measure (its first token)")
                    triple = {side: workers[side].receive("measure")["sample"] for side in order}
                elif concurrent:  # duet: the three generate at once, so host drift hits all alike
                    for side in order:
                        workers[side].send(request)
                    triple = {side: workers[side].receive("measure")["sample"] for side in order}
                else:
                    triple = {side: workers[side].call(request)["sample"] for side in order}
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"order": list(order), **triple}) + "\n")
        print(f"{triples} triples per size")
    finally:
        for worker in workers.values():
            worker.stop()
        for tree in trees.values():
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _stream(path: Path, side: str) -> list[tuple[Sample, Sample]]:
    pairs = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        pairs.append((Sample.from_dict(data["a"]), Sample.from_dict(data[side])))
    return pairs


def _replay_job(pairs: list[tuple[Sample, Sample]], cursor: int, key: str, plan: ABPlan,
                alpha: float) -> tuple[Any, int]:
    """One case of one job, judged by the plugin's own loop on recorded pairs."""
    taken = {"base": 0, "head": 0}

    def measure(side: str, request: GenerationRequest) -> Sample:
        index = cursor + taken[side]
        taken[side] += 1
        if index >= len(pairs):
            raise IndexError
        return pairs[index][0 if side == "base" else 1]

    def judge(base: list[Sample], head: list[Sample]) -> Any:
        return judge_pairs(key, base, head, tolerances=AB_TOLERANCES, alpha=alpha, method=plan.estimator)

    run = run_pairs(measure, GenerationRequest(None, "", 0), warmup=0, plan=plan, judge=judge)
    return judge(run.base, run.head), cursor + len(run.base)


def judge_recording(outs: list[Path], jobs: int, pairs: str, alpha: float, estimator: str = "fast") -> str:
    """Cut each recording into consecutive jobs (up to ``jobs`` in all, the folders in turn)
    and judge each as ``pytest --mlx-ab-base`` would."""
    low, _, high = pairs.partition(":")
    plan = ABPlan(base_rev="recorded", min_pairs=int(low), max_pairs=int(high), budget_s=math.inf,
                  estimator=estimator)
    files = sorted(outs[0].glob("rounds-*.jsonl"))
    sizes = [re.sub(r"^rounds-|\.jsonl$", "", f.name) for f in files]
    family = per_comparison_alpha(alpha, len(files) * len(AB_TOLERANCES))
    lines = [f"recording {', '.join(map(str, outs))}: sizes {', '.join(sizes)}; estimator {estimator}; "
             f"pairs {pairs}, alpha {alpha} (each metric at {family:.2g}); tolerances " +
             ", ".join(f"{k} {v * 100:.0f}%" for k, v in AB_TOLERANCES.items()), ""]
    lines.append("| jobs | sizes | failed | pairs per case (median, max) | cases failed per metric |")
    lines.append("|---|---|---|---|---|")
    summary = {}
    for label, side in (("A/A", "a2"), ("A/B", "b")):
        failed = done = 0
        used: list[int] = []
        per_metric: dict[str, int] = {}
        for out in outs:
            streams = {size: _stream(out / f"rounds-{size}.jsonl", side) for size in sizes}
            cursors = {size: 0 for size in sizes}
            while done < jobs:
                verdicts = []
                try:
                    for size in sizes:
                        before = cursors[size]
                        comparison, cursors[size] = _replay_job(streams[size], before, size, plan, family)
                        used.append(cursors[size] - before)
                        verdicts.append(comparison)
                except IndexError:
                    break
                done += 1
                bad = [c for c in verdicts if c.status in ("regressed", "workload-changed")]
                failed += bool(bad)
                for c in bad:
                    for m in c.regressed:
                        per_metric[m.metric] = per_metric.get(m.metric, 0) + 1
        metrics = ", ".join(f"{k} {v}" for k, v in per_metric.items()) or "-"
        pairs_used = f"{median(used):.0f}, {max(used)}" if used else "-"
        lines.append(f"| {label} | {', '.join(sizes)} | **{failed}/{done}** | {pairs_used} | {metrics} |")
        summary[label] = (failed, done)
    lines.append("")
    lines.append("Size of the committed slowdown, all recorded pairs (A against B; per-pair log ratios, "
                 "Hodges-Lehmann with its 95% interval):")
    for size in sizes:
        stream = [pair for out in outs for pair in _stream(out / f"rounds-{size}.jsonl", "b")]
        base, head = [p[0] for p in stream], [p[1] for p in stream]
        parts = []
        for metric in ("generation_tps", "end_to_end_tps", "ttft_s"):
            m = compare_paired(metric, [getattr(s, metric) for s in base], [getattr(s, metric) for s in head],
                               0.0, 0.025, "median")
            lo, hi = m.interval or [math.nan, math.nan]
            parts.append(f"{metric} {m.change * 100:+.1f}% [{lo * 100:+.1f}%, {hi * 100:+.1f}%]")
        lines.append(f"- {size} ({len(stream)} pairs): " + "; ".join(parts))
    return "\n".join(lines)


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
    r.add_argument("--triples", type=int, default=400)
    r.add_argument("--tokens", type=int, default=64)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--time-limit", type=float, default=math.inf)
    r.add_argument("--concurrent", action="store_true",
                   help="the three workers generate at once (duet) instead of taking turns")
    r.add_argument("--staggered", action="store_true",
                   help="at once, but each worker asked when the one before has its first token "
                        "(prefills never collide; --mlx-ab-order staggered)")
    j = sub.add_parser("judge")
    j.add_argument("out", type=Path, nargs="+")
    j.add_argument("--jobs", type=int, default=20)
    j.add_argument("--pairs", default="10:40")
    j.add_argument("--alpha", type=float, default=0.05)
    j.add_argument("--estimator", choices=("fast", "median"), default="fast")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.scratch, args.mlp, args.cols)
    elif args.command == "record":
        record(args.scratch, args.out, args.model, args.sizes, args.triples, args.tokens,
               args.time_limit, args.warmup, args.concurrent, args.staggered)
    else:
        print(judge_recording(args.out, args.jobs, args.pairs, args.alpha, args.estimator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
