"""Regenerates the tables of docs/serving.md (concurrency, request rates and the knee, workloads, the memory soak) from --mlx-json reports of the server suite.

Concurrency cases of several reports (e.g. one session in the default continuous mode and one
with ``--mlx-server-concurrency-mode synchronized-rounds``) are listed together, by load mode.
The rate, workload and soak sections are the ones the terminal prints under the server table.

    python -m benchmarks.serving_tables docs/results/cpu/serving/concurrency.json docs/results/cpu/serving/rates.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from pytest_mlxvlm.reports.serving import serving_lines
from pytest_mlxvlm.results import CaseResult

from ._common import parser


def cases(paths: list[Path]) -> list[dict[str, Any]]:
    return [case for path in paths for case in json.loads(path.read_text())["results"]]


def concurrency(found: list[dict[str, Any]]) -> list[str]:
    """Per load mode and concurrency: requests, aggregate, per-request Speed, TTFT, ITL, TPOT."""
    lines = ["| load | clients | requests | aggregate tok/s | per request tok/s | TTFT p50/p95 | ITL p50/p95 | "
             "TPOT p50 | requests/s |", "|---|---|---|---|---|---|---|---|---|"]
    for case in found:
        if "test_server_concurrency" not in case["case_key"]:
            continue
        info = case["workload"]["server"]
        speed = statistics.median(s["end_to_end_tps"] for s in case["samples"])
        lines.append(f"| {info.get('load', 'synchronized-rounds')} | {info['clients']} | {info['requests']} | "
                     f"{info['aggregate_tps']:.1f} | {speed:.1f} | {info['ttft_ms']['p50']:.0f} / "
                     f"{info['ttft_ms']['p95']:.0f} ms | {info['itl_ms']['p50']:.1f} / {info['itl_ms']['p95']:.1f} ms | "
                     f"{info['tpot_ms']['p50']:.1f} ms | {info.get('request_rate', 0.0):.2f} |")
    return lines


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("reports", nargs="+", type=Path)
    args = ap.parse_args()
    found = cases(args.reports)
    out: list[str] = []
    if any("test_server_concurrency" in c["case_key"] for c in found):
        out += ["Concurrency:", *concurrency(found)]
    results = [CaseResult.from_dict(c) for c in found]
    for model in dict.fromkeys(r.model for r in results):
        out += serving_lines([r for r in results if r.model == model])
    print("\n".join(out))


if __name__ == "__main__":
    main()
