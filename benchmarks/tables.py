"""docs/benchmarks.md, the sweep tables: Markdown from --mlx-json reports beside vllm-mlx's published figures.

Markdown tables from --mlx-json reports, beside vllm-mlx's published figures.

    python -m benchmarks.tables docs/results/h200/sweep-*.json \
        --reference docs/reference/vllm-mlx-image-benchmarks.json
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import parser


def table(doc: dict) -> list[str]:
    bw = any(r.get("bandwidth") for r in doc["results"])
    head = ("| Resolution | Time | Speed | spread (IQR/median) | TTFT | Prefill | Decode | "
            "Image tok | Peak mem |" + (" % of BW limit |" if bw else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in doc["results"]:
        s = r["summary"]
        speed = s["end_to_end_tps"]
        row = (f"| {r['resolution']} | {s['time_s']['median']:.2f}s | {speed['median']:.1f} tok/s | "
               f"±{speed['iqr'] / speed['median'] * 100:.1f}% (n={speed['n']}, min {speed['minimum']:.1f}, "
               f"max {speed['maximum']:.1f}) | {s['ttft_s']['median'] * 1000:.0f} ms | "
               f"{s['prompt_tps']['median']:.0f} tok/s | {s['generation_tps']['median']:.1f} tok/s | "
               f"{s['image_tokens']['median']:.0f} | {s['peak_memory']['median']:.2f} GB |")
        if bw:
            b = r["bandwidth"]
            row += f" {b['fraction'] * 100:.0f}% of {b['limit_tps']:.0f} tok/s |"
        lines.append(row)
    agg = next(iter(doc["models"].values()))["aggregate"]
    lines.append("")
    lines.append(f"Average {agg['average_tps']:.1f} tok/s; aggregate {agg['configs']} configs, "
                 f"{agg['total_time_s']:.2f} s, {agg['total_tokens']} tokens, {agg['aggregate_tps']:.1f} tok/s.")
    return lines


def references(doc: dict) -> list[str]:
    lines = []
    for run in doc["runs"]:
        lines.append(f"**{run['chip']} ({run['memory_gb']} GB), {run['model']}** ({run['mode']}"
                     + (", through the server" if run.get("served") else "") + ")")
        lines.append("")
        lines.append("| Resolution | Time | Tokens | Speed |")
        lines.append("|---|---|---|---|")
        for r in run["results"]:
            lines.append(f"| {r['resolution']} | {r['time_s']:.2f}s | {r['tokens']} | {r['tok_per_s']:.1f} tok/s |")
        lines.append("")
    return lines


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("reports", nargs="+", type=Path, help="--mlx-json reports")
    cli.add_argument("--reference", type=Path,
                     help="published figures to print beside them (docs/reference/*.json)")
    args = cli.parse_args()
    for path in args.reports:
        doc = json.loads(path.read_text())
        m = doc["machine"]
        print(f"### {', '.join(doc['settings']['models'])} on {m['chip']} ({m['backend']})\n")
        print("\n".join(table(doc)))
        print()
    if args.reference:
        print("\n".join(references(json.loads(args.reference.read_text()))))


if __name__ == "__main__":
    main()
