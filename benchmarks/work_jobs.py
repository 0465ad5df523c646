"""docs/work.md "Measured": unchanged code and five injected regressions in a scratch mlx-vlm repository, each judged by the work profile in single pytest jobs.

    python -m benchmarks.work_jobs build SCRATCH                  # the scratch repository
    python -m benchmarks.work_jobs run SCRATCH OUT --jobs 20 --model synthetic:tiny \\
        --resolutions 224x224,1024x1024 [--parallel 2] [--baselines DIR]
    python -m benchmarks.work_jobs judge OUT [OUT ...]            # the table, from the job reports

``build`` copies the installed mlx_vlm into a git repository (commit ``base``) and commits each
injected change on a branch of its own, as a pull request to mlx-vlm would:

- ``elementwise``: 60 extra multiplies of the logits in the decode step (kept in the graph);
- ``mlp-twice``: the first decoder layer's MLP computed twice (Qwen3-VL);
- ``patch-embed``: the vision tower's patch embedding computed twice (prefill only);
- ``cache-eval``: the KV cache state evaluated every token instead of every 50;
- ``eval-not-async``: ``mx.async_eval`` of the next token replaced by ``mx.eval``;
- ``host-sleep``: 0.5 ms of host-only sleep per token (no work change: timing's job).

``run`` records a baseline with the ``base`` checkout (unless ``--baselines`` names one, e.g. from
another machine), then runs ``--jobs`` separate pytest sessions per variant, each a fresh process
with that variant's checkout first on the path (so ``import mlx_vlm`` is the variant's code),
one timed round after the profiled warmup, gating against the baseline. Each job's verdicts
are kept in ``jobs/VARIANT/NN.meta.json`` (job 00's whole ``--mlx-json`` report and log too); a
job whose file exists is not run again (resumable).
``judge`` counts, per variant and size, the jobs whose work verdict is as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# variant -> [(file in mlx_vlm, anchor, replacement)]; each anchor must occur exactly once
INJECTIONS: dict[str, list[tuple[str, str, str]]] = {
    "elementwise": [(
        "generate/ar.py",
        "            last_outputs = outputs\n            logits = outputs.logits[:, -1, :]\n",
        "            last_outputs = outputs\n            logits = outputs.logits[:, -1, :]\n"
        "            extra = logits\n            for _ in range(60):\n                extra = extra * 1.0001\n"
        "            logits = logits + 0 * extra\n",
    )],
    "mlp-twice": [
        ("models/qwen3_vl/language.py",
         "        self.mlp = MLP(args.hidden_size, args.intermediate_size)\n",
         "        self.mlp = MLP(args.hidden_size, args.intermediate_size)\n        self.twice = layer_idx == 0\n"),
        ("models/qwen3_vl/language.py",
         "        r = self.mlp(self.post_attention_layernorm(h))\n        out = h + r\n",
         "        r = self.mlp(self.post_attention_layernorm(h))\n        if self.twice:\n"
         "            r = r + 0 * self.mlp(self.post_attention_layernorm(h))\n        out = h + r\n"),
    ],
    "patch-embed": [(
        "models/qwen3_vl/vision.py",
        "        hidden_states = self.patch_embed(hidden_states)\n        pos_embeds",
        "        hidden_states = self.patch_embed(hidden_states) + 0 * self.patch_embed(hidden_states)\n"
        "        pos_embeds",
    )],
    "cache-eval": [(
        "generate/ar.py",
        "        if (n + 1) % DEFAULT_CACHE_EVAL_INTERVAL == 0:\n            mx.eval([c.state for c in prompt_cache])\n",
        "        if True:  # every token\n            mx.eval([c.state for c in prompt_cache])\n",
    )],
    "eval-not-async": [(
        "generate/ar.py",
        "            next_y, next_logprobs = _step(y[None])\n            mx.async_eval(next_y, next_logprobs)\n",
        "            next_y, next_logprobs = _step(y[None])\n            mx.eval(next_y, next_logprobs)\n",
    )],
    "host-sleep": [(
        "generate/ar.py",
        "        yield y.item(), logprobs\n        if n % 256 == 0:\n",
        "        time.sleep(0.0005)\n        yield y.item(), logprobs\n        if n % 256 == 0:\n",
    )],
}
VARIANTS = ("base", *INJECTIONS)
EXPECTED = {"base": "same", "host-sleep": "same", **{v: "added" for v in INJECTIONS if v != "host-sleep"}}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=work-jobs", "-c", "user.email=w@j",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True).stdout


def build(scratch: Path) -> None:
    """The scratch repository: the installed mlx_vlm at ``base``, one branch per injection."""
    import mlx_vlm

    if (scratch / ".git").exists():
        print(f"{scratch}: exists, kept")
        return
    scratch.mkdir(parents=True)
    source = Path(mlx_vlm.__file__).parent
    shutil.copytree(source, scratch / "mlx_vlm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git(scratch, "init", "-q", "-b", "base")
    git(scratch, "add", "-A")
    git(scratch, "commit", "-qm", f"mlx-vlm {getattr(mlx_vlm, '__version__', '?')} as installed")
    for variant, edits in INJECTIONS.items():
        git(scratch, "checkout", "-q", "-b", variant, "base")
        for rel, anchor, replacement in edits:
            path = scratch / "mlx_vlm" / rel
            text = path.read_text()
            if text.count(anchor) != 1:
                raise SystemExit(f"{variant}: the anchor in {rel} occurs {text.count(anchor)} times, not once")
            path.write_text(text.replace(anchor, replacement))
        git(scratch, "commit", "-qam", f"inject {variant}")
    git(scratch, "checkout", "-q", "base")
    print(f"{scratch}: base and {len(INJECTIONS)} injected branches")


def checkout(scratch: Path, variant: str) -> Path:
    """A worktree of the scratch repository at ``variant`` (made once)."""
    where = scratch.parent / f"{scratch.name}-{variant}"
    if not where.exists():
        git(scratch, "worktree", "add", "-q", "--detach", str(where), variant)
    return where


def pytest_command(args: argparse.Namespace, json_path: Path, baselines: Path, *extra: str) -> list[str]:
    # option=value throughout: pytest reads its arguments once before it knows the plugin's
    # options, and a path given as a separate word would then count as a place to collect from
    return [sys.executable, "-m", "pytest", "--pyargs", "pytest_mlxvlm.builtin.test_mlxvlm_images",
            f"--rootdir={ROOT}", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q", "--mlx-suite=off",
            f"--mlx-model={args.model}", f"--mlx-resolutions={args.resolutions}",
            f"--mlx-max-tokens={args.max_tokens}", "--mlx-rounds=1", "--mlx-warmup=1",
            f"--mlx-baseline-dir={baselines}", f"--mlx-json={json_path}", *extra]


def run_one(args: argparse.Namespace, variant: str, where: Path, json_path: Path, baselines: Path,
            *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(pytest_command(args, json_path, baselines, *extra), env=env, cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (json_path.with_suffix(".log")).write_text(done.stdout[-6000:] + done.stderr[-3000:])
    cases = []
    if json_path.exists():
        for case in json.loads(json_path.read_text())["results"]:
            check = case.get("work_check") or {}
            cases.append({"resolution": case["resolution"], "verdict": check.get("verdict"),
                          "description": check.get("description"), "outputs": check.get("outputs"),
                          "hash": (case.get("work") or {}).get("hash")})
    meta = {"variant": variant, "returncode": done.returncode, "seconds": round(seconds, 1), "cases": cases}
    if done.returncode in (0, 1):  # a job interrupted or in error is run again on resume
        json_path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return meta


def run(args: argparse.Namespace) -> None:
    scratch, out = Path(args.scratch).resolve(), Path(args.out).resolve()
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    baselines = Path(args.baselines).resolve() if args.baselines else out / "baselines"
    record = not args.baselines and not any(baselines.rglob("*.json"))
    # only the checkouts this run needs: on a fresh GPU machine each import check costs seconds
    where = {v: checkout(scratch, v) for v in VARIANTS if v in variants or (record and v == "base")}
    for variant, path in where.items():  # each checkout's mlx_vlm is the one imported
        found = subprocess.run([sys.executable, "-c", "import mlx_vlm; print(mlx_vlm.__file__)"],
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                   [str(path), os.environ.get("PYTHONPATH", "")])}, capture_output=True, text=True)
        if not found.stdout.startswith(str(path)):
            raise SystemExit(f"{variant}: mlx_vlm comes from {found.stdout.strip() or found.stderr}, not {path}")
    if record:
        meta = run_one(args, "base", where["base"], out / "baseline-session.json", baselines, "--mlx-update-baselines")
        print(f"baseline recorded with base: exit {meta['returncode']} in {meta['seconds']} s", flush=True)
    todo = [(v, i) for i in range(args.jobs) for v in variants
            if not (out / "jobs" / v / f"{i:02d}.meta.json").exists()]
    print(f"{len(todo)} jobs to run ({args.parallel} at a time)", flush=True)

    def job(item: tuple[str, int]) -> None:
        variant, i = item
        path = out / "jobs" / variant / f"{i:02d}.json"
        path.parent.mkdir(exist_ok=True)
        meta = run_one(args, variant, where[variant], path, baselines)
        if i:  # the first job's whole report is kept; the others' condensed into .meta.json
            path.unlink(missing_ok=True)
            path.with_suffix(".log").unlink(missing_ok=True)
        print(f"{variant} {i:02d}: exit {meta['returncode']} in {meta['seconds']} s", flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(job, todo))


def judge(outs: list[Path]) -> str:
    """Per variant and size: jobs, verdicts, and the distinct diffs the jobs reported."""
    verdicts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    texts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    failed: Counter[str] = Counter()
    jobs: Counter[str] = Counter()
    seconds: dict[str, list[float]] = defaultdict(list)
    for out in outs:
        for path in sorted((Path(out) / "jobs").glob("*/[0-9][0-9].meta.json")):
            variant = path.parent.name
            meta = json.loads(path.read_text())
            jobs[variant] += 1
            failed[variant] += meta["returncode"] != 0
            seconds[variant].append(meta["seconds"])
            for case in meta["cases"]:
                verdicts[(variant, case["resolution"])][case["verdict"] or "none"] += 1
                texts[(variant, case["resolution"])][case["description"] or ""] += 1
    lines = ["| Variant | Size | Jobs | Work verdicts | As expected | Job failed | Diff reported |",
             "|---|---|---|---|---|---|---|"]
    for (variant, size), counts in sorted(verdicts.items(), key=lambda kv: (VARIANTS.index(kv[0][0]), kv[0][1])):
        n = sum(counts.values())
        expected = counts.get(EXPECTED[variant], 0)
        shown = "; ".join(f"{t} ({c})" if len(texts[(variant, size)]) > 1 else t
                          for t, c in texts[(variant, size)].most_common(3))
        lines.append(f"| {variant} | {size} | {n} | {', '.join(f'{v} {c}' for v, c in counts.items())} | "
                     f"{expected}/{n} ({EXPECTED[variant]}) | {failed[variant]}/{jobs[variant]} | {shown} |")
    lines.append("")
    lines.append("Seconds a job (median): " + ", ".join(
        f"{v} {sorted(s)[len(s) // 2]:.0f}" for v, s in seconds.items()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.work_jobs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make the scratch mlx-vlm repository")
    b.add_argument("scratch")
    r = sub.add_parser("run", help="record a baseline, then the jobs of each variant (resumable)")
    r.add_argument("scratch")
    r.add_argument("out")
    r.add_argument("--jobs", type=int, default=20)
    r.add_argument("--model", default="synthetic:tiny")
    r.add_argument("--resolutions", default="224x224,1024x1024")
    r.add_argument("--max-tokens", type=int, default=64)
    r.add_argument("--variants", default=",".join(VARIANTS))
    r.add_argument("--parallel", type=int, default=1, help="jobs at once (the work profile does not depend on timing)")
    r.add_argument("--baselines", help="gate against this baseline folder instead of recording one")
    j = sub.add_parser("judge", help="the table of verdicts")
    j.add_argument("outs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(Path(args.scratch).resolve())
    elif args.command == "run":
        build(Path(args.scratch).resolve())
        run(args)
    else:
        print(judge([Path(o) for o in args.outs]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
