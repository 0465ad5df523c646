"""docs/benchmarks.md "Through a server": the server beside in-process, and the concurrency table.

The server's cost per resolution beside the in-process figures, and the concurrency table,
from ``--mlx-json`` reports (one session holding both sides, or several files).

    python -m benchmarks.server_tables inprocess.json server.json concurrency.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import case_median


def cases(paths: list[Path]) -> list[dict[str, Any]]:
    """Every case of the reports, in order."""
    return [case for path in paths for case in json.loads(path.read_text())["results"]]


def side_by_side(all_cases: list[dict[str, Any]]) -> list[str]:
    """Markdown: per resolution, in-process TTFT and Speed against the server's (one client)."""
    inproc = {c["resolution"]: c for c in all_cases if not c.get("side")}
    served = {c["resolution"]: c for c in all_cases
              if c.get("side") == "server" and "test_server_generation" in c["case_key"]}
    lines = ["| size | server TTFT | server Speed | server Decode | in-process TTFT | in-process Speed "
             "| in-process Decode | Speed server/in-process |", "|---|---|---|---|---|---|---|---|"]
    for size in [s for s in inproc if s in served] + [s for s in served if s not in inproc]:
        srv, loc = served[size], inproc.get(size)
        row = [size, f"{case_median(srv, 'ttft_s') * 1000:.0f} ms", f"{case_median(srv, 'end_to_end_tps'):.1f} tok/s",
               f"{case_median(srv, 'generation_tps'):.1f} tok/s"]
        if loc is None:
            row += ["-", "-", "-", "-"]
        else:
            row += [f"{case_median(loc, 'ttft_s') * 1000:.0f} ms", f"{case_median(loc, 'end_to_end_tps'):.1f} tok/s",
                    f"{case_median(loc, 'generation_tps'):.1f} tok/s",
                    f"{case_median(srv, 'end_to_end_tps') / case_median(loc, 'end_to_end_tps'):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def concurrency(all_cases: list[dict[str, Any]]) -> list[str]:
    """Markdown: per number of clients, aggregate tok/s, per-request Speed and latency percentiles."""
    lines = ["| size | clients | aggregate | per request | TTFT p50/p95/p99 | ITL p50/p95/p99 | end-to-end p99 "
             "| peak mem |", "|---|---|---|---|---|---|---|---|"]
    for case in all_cases:
        if case.get("side") != "server" or "test_server_concurrency" not in case["case_key"]:
            continue
        info = case["workload"]["server"]
        pcts = {k: "/".join(f"{info[k][q]:.0f}" if k != "itl_ms" else f"{info[k][q]:.1f}"
                            for q in ("p50", "p95", "p99")) for k in ("ttft_ms", "itl_ms")}
        memory = info.get("metrics_peak_memory_gb")
        lines.append(f"| {case['resolution']} | {info['clients']} | {info['aggregate_tps']:.1f} tok/s | "
                     f"{case_median(case, 'end_to_end_tps'):.1f} tok/s | {pcts['ttft_ms']} ms | {pcts['itl_ms']} ms | "
                     f"{info['e2e_ms']['p99'] / 1000:.2f} s | "
                     f"{memory if isinstance(memory, str) else f'{memory:.2f} GB' if memory else '-'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args()
    found = cases(args.reports)
    print("\n".join(["Server against in process (medians; one client):", *side_by_side(found), "",
                     "Concurrent clients:", *concurrency(found)]))


if __name__ == "__main__":
    main()
