"""Regenerates the leak table of docs/serving.md: the memory soak on the unchanged mlx_vlm.server and on a copy that keeps every request's image.

Two pytest sessions of the server suite's soak (``--mlx-server-soak N``), each starting its own
``python -m mlx_vlm.server``. The second runs with a ``sitecustomize.py`` on PYTHONPATH that,
in the server's process only (``mlx_vlm.server`` in its command line), wraps
``mlx_vlm.utils.load_image`` so that every image it loads is also appended to a list that is
never emptied: the leak of vllm-mlx issue #442's shape, one decoded image per request. pytest's
own process is left untouched (it never imports mlx_vlm.server). The unchanged server must pass,
the leaky one must fail with the trend.

    python -m benchmarks.soak_leak --requests 500 --out docs/results/cpu/serving/leak
    python -m benchmarks.soak_leak --requests 200 --size 448x448 --which leaky
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import parser, workdir

LEAK = '''\
"""Injected by benchmarks/soak_leak.py: mlx_vlm.server keeps every image it loads."""
import sys

if any("mlx_vlm.server" in arg for arg in getattr(sys, "orig_argv", sys.argv)):
    import mlx_vlm.utils as _utils

    _KEPT = []
    _load_image = _utils.load_image

    def load_image(*args, **kwargs):
        image = _load_image(*args, **kwargs)
        _KEPT.append(image.copy())  # the leak: a copy of each request's decoded image, never freed
        if len(_KEPT) % 100 == 0:
            print(f"leak: {len(_KEPT)} images kept", file=sys.stderr, flush=True)
        return image

    _utils.load_image = load_image
    print("leak: mlx_vlm.utils.load_image keeps every image", file=sys.stderr, flush=True)
'''


def soak(which: str, out: Path, spec: str, requests: int, size: str, clients: int, max_tokens: int,
         threshold: float | None) -> dict[str, Any]:
    """One pytest session of the soak; its verdict, trend and outcome."""
    env = dict(os.environ)
    logs = Path(tempfile.mkdtemp(prefix=f"mlxvlm-soak-{which}-"))
    env["TMPDIR"] = str(logs)  # the server's log lands here
    if which == "leaky":
        site = logs / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(LEAK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    report = out / f"{which}.json"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark",
               "--pyargs", "pytest_mlxvlm.builtin.test_mlxvlm_server", "--mlx-suite", "server",
               "--mlx-model", spec, "--mlx-resolutions", size, "--mlx-server-concurrency", str(clients),
               "--mlx-max-tokens", str(max_tokens), "--mlx-warmup", "2", "--mlx-server-soak", str(requests),
               "-k", "server_soak", f"--mlx-json={report}", "-rfE", "--rootdir", str(logs),
               *(["--mlx-server-leak-threshold", f"{threshold:g}"] if threshold else [])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=logs, env=env, timeout=4 * 3600)
    (out / f"{which}.txt").write_text(done.stdout + done.stderr)
    server_logs = sorted(logs.rglob("mlxvlm-server-*.log"), key=lambda p: p.stat().st_mtime)
    if server_logs:
        (out / f"{which}-server.log").write_text(server_logs[-1].read_text(errors="replace")[-20000:])
    doc = json.loads(report.read_text()) if report.exists() else {"results": []}
    case = next(iter(doc["results"]), None)
    soak_info = (case or {}).get("workload", {}).get("server", {}).get("soak", {})
    return {"which": which, "exit": done.returncode, "outcome": (case or {}).get("outcome"),
            "requests": (case or {}).get("workload", {}).get("server", {}).get("requests"),
            "verdict": soak_info.get("verdict"), "trends": soak_info.get("trends", [])}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="synthetic:tiny")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--size", default="224x224")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--threshold", type=float, help="MB per 100 requests (default: the plugin's)")
    ap.add_argument("--which", choices=("both", "unchanged", "leaky"), default="both")
    ap.add_argument("--out", help="folder for the reports and summary.md")
    args = ap.parse_args()
    out = workdir(args.out, "soak-leak")
    rows = [soak(which, out, args.model, args.requests, args.size, args.clients, args.max_tokens, args.threshold)
            for which in (("unchanged", "leaky") if args.which == "both" else (args.which,))]
    lines = ["| server | requests | test | verdict | growth per 100 requests (95% interval) | memory |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for t in row["trends"] or [{}]:
            lines.append(f"| {row['which']} | {row['requests']} | {row['outcome']} (exit {row['exit']}) | "
                         f"{row['verdict']} | {t.get('growth_mb_per_100', 0):+.2f} MB "
                         f"({(t.get('interval') or [0, 0])[0]:+.2f} to {(t.get('interval') or [0, 0])[1]:+.2f}) | "
                         f"{t.get('series', '-')} |")
    caught = {r["which"]: r["verdict"] for r in rows}
    summary = ("the leak was caught and the unchanged server passed"
               if caught.get("leaky") == "leak" and caught.get("unchanged") == "no leak" else f"verdicts: {caught}")
    text = "\n".join(lines) + f"\n\n{summary}\n"
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
