"""Where does session-to-session drift come from? Probes around real pytest sessions.

In one process (the model loaded once), repeatedly: time a launch-bound probe (many tiny MLX
kernels, each evaluated: host and driver cost) and a compute-bound probe (large matmuls: the
device itself), then run one real session of the built-in suite. If the sessions' speeds
follow the launch probe, the drift is the host's, not the accelerator's.

    python benchmarks/drift_probe.py --model synthetic:qwen3-vl-8b-4bit --sessions 20 --out drift.jsonl
    python benchmarks/drift_probe.py --resolutions 224x224 --sessions 3 --matmul-size 512   # CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sensitivity import ModelCache  # noqa: E402


def launch_probe(n: int = 3000) -> float:
    """Seconds per tiny kernel launched and evaluated on its own."""
    import mlx.core as mx

    x = mx.zeros((16,))
    mx.eval(x)
    start = time.perf_counter()
    for _ in range(n):
        x = x + 1
        mx.eval(x)
    return (time.perf_counter() - start) / n


def compute_probe(size: int = 4096, n: int = 20) -> float:
    """Seconds per large bf16 matmul."""
    import mlx.core as mx

    a = mx.random.normal((size, size)).astype(mx.bfloat16)
    mx.eval(a @ a)
    start = time.perf_counter()
    for _ in range(n):
        mx.eval(a @ a)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic:tiny")
    parser.add_argument("--resolutions", default="224x224,448x448,768x768,1024x1024")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("drift.jsonl"))
    parser.add_argument("--matmul-size", type=int, default=4096, help="use ~512 on a CPU")
    args = parser.parse_args()
    began = time.perf_counter()
    cache = ModelCache()
    work = Path(tempfile.mkdtemp(prefix="mlxvlm-drift-"))
    for i in range(args.sessions):
        if args.time_limit is not None and time.perf_counter() - began > args.time_limit:
            break
        before = launch_probe(), compute_probe(args.matmul_size)
        report = work / f"s{i}.json"
        pytest.main(["--pyargs", "pytest_mlxvlm.builtin.test_mlxvlm_images", "--mlx-model", args.model,
                     "--mlx-resolutions", args.resolutions, "--mlx-suite", "off", "-q",
                     "--mlx-json", str(report), "--mlx-baseline-dir", str(work / "none"),
                     "-p", "no:benchmark", "-p", "no:cacheprovider"], plugins=[cache])
        after = launch_probe(), compute_probe(args.matmul_size)
        doc = json.loads(report.read_text())
        row = {"session": i, "launch_us": [before[0] * 1e6, after[0] * 1e6],
               "matmul_ms": [before[1] * 1e3, after[1] * 1e3],
               "speed": {r["resolution"]: r["summary"]["end_to_end_tps"]["median"] for r in doc["results"]},
               "decode": {r["resolution"]: r["summary"]["generation_tps"]["median"] for r in doc["results"]}}
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
