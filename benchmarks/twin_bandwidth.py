"""docs/benchmarks.md "Weightless twins": the bandwidth bound for a report that has none.

The bandwidth bound of decode for the twins of a --mlx-json report that has none (--mlx-isolate).

For each twin (``synthetic:<name>``) measured in the report, the model is built as
``mlx_vlm.load`` would hold it (the twin builder's classes, dtype cast and quantization, then
mlx-vlm's own ``load_model`` with its sanitizing and quantization predicate) with its weights
never drawn: MLX arrays are lazy and a tensor's bytes follow from its shape and dtype, so even a
24B twin is measured in a few hundred MB. The plugin's own ``decode_weight_bytes`` and
``kv_bytes_per_position`` give the bytes one generated token reads, ``decode_limit`` the bound
at each case's median prompt and generated tokens. Prints Markdown: per model and size the image
tokens, the measured Decode median, the bound and the % of it; where the report recorded a bound
(a model measured in process) it is shown beside, as a check of this computation.

    python -m benchmarks.twin_bandwidth docs/results/h200/twins/session-6/quick.json \\
        > docs/results/h200/twins/session-6/bandwidth.md
    python -m benchmarks.twin_bandwidth docs/results/h200/twins/quick-qwen3-vl-30b-a3b-4bit.json --gbps 4800

``--gbps`` defaults to the published bandwidth of the report's chip (``bandwidth.lookup_gbps``,
4800 GB/s for an NVIDIA H200), the figure the plugin itself uses.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from pytest_mlxvlm.common.bandwidth import decode_limit, decode_weight_bytes, kv_bytes_per_position, lookup_gbps
from pytest_mlxvlm.models import synthetic, twins

from ._common import case_median, parser

SHARD = "model.safetensors"


def lazy_model(spec: str) -> Any:
    """A twin's model as ``mlx_vlm.load`` returns it, every weight a lazy array never drawn."""
    from mlx.utils import tree_flatten
    from mlx_vlm import utils

    from pytest_mlxvlm.models.twinbuild import build_model, quantize

    recipe = synthetic.parse(spec)
    if not isinstance(recipe, twins.TwinRecipe):
        raise SystemExit(f"{spec}: not a twin (synthetic:<name> of pytest_mlxvlm/twins/)")
    files = twins.prepare(recipe)
    built = build_model(files.config, files.dtype, recipe.seed)
    if files.config.get("quantization"):
        with contextlib.redirect_stdout(sys.stderr):  # mlx-vlm prints its bits per weight
            quantize(built, files.config)
    saved = dict(tree_flatten(built.parameters()))  # what the builder's save_weights writes
    with tempfile.TemporaryDirectory(prefix="mlxvlm-twin-bw-") as folder:
        path = Path(folder)
        (path / "config.json").write_text(json.dumps(files.config))
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {name: SHARD for name in saved}}))
        (path / SHARD).touch()
        with mock.patch.object(utils, "_load_safetensors", lambda _: dict(saved)):
            return utils.load_model(path, lazy=True)


def decode_bytes(spec: str) -> tuple[int, int]:
    """(weight bytes, KV cache bytes per position) one generated token of a twin reads."""
    model = lazy_model(spec)
    return decode_weight_bytes(model), kv_bytes_per_position(model)


def case_row(result: dict[str, Any], gbps: float, weights: int, kv: int) -> dict[str, Any]:
    """One case: its tokens, measured Decode, the bound and the recorded bound (if any)."""
    decode = case_median(result, "generation_tps")
    limit = decode_limit(gbps, weights, kv, int(case_median(result, "prompt_tokens")),
                         int(case_median(result, "generation_tokens")))["limit_tps"]
    recorded = (result.get("bandwidth") or {}).get("limit_tps")
    return {"resolution": result["resolution"], "image_tokens": case_median(result, "image_tokens"),
            "prompt_tokens": case_median(result, "prompt_tokens"), "decode": decode, "limit": limit,
            "fraction": decode / limit, "recorded": recorded}


def model_lines(spec: str, results: list[dict[str, Any]], gbps: float, weights: int, kv: int) -> list[str]:
    """A model's Markdown section: what a token reads, then one row per case."""
    rows = [case_row(r, gbps, weights, kv) for r in results]
    checked = any(row["recorded"] for row in rows)
    lines = [f"### {spec}", "",
             f"Weights read per token {weights / 1e9:.3f} GB; KV cache {kv / 1024:.1f} KiB per "
             f"position of context (twin `{synthetic.parse(spec).cache_key}`).", ""]
    header = "| Resolution | Image tok | Prompt tok | Decode | Bound | % of bound |"
    lines += [header + (" Recorded bound | Difference |" if checked else ""),
              "|" + "---|" * (header.count("|") - 1 + (2 if checked else 0))]
    for row in rows:
        line = (f"| {row['resolution']} | {row['image_tokens']:.0f} | {row['prompt_tokens']:.0f} | "
                f"{row['decode']:.1f} tok/s | {row['limit']:.0f} tok/s | {row['fraction'] * 100:.1f}% |")
        if checked:
            line += (f" {row['recorded']:.0f} tok/s | {(row['limit'] / row['recorded'] - 1) * 100:+.3f}% |"
                     if row["recorded"] else " - | - |")
        lines.append(line)
    return lines + [""]


def report_lines(doc: dict[str, Any], gbps: float, source: str) -> list[str]:
    """The whole Markdown output for one report."""
    machine = doc["machine"]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for result in doc["results"]:
        if result.get("samples") and result.get("side", "") in ("", "head"):
            by_model.setdefault(result["model"], []).append(result)
    lines = [f"## Bandwidth bound of decode: {source}", "",
             f"Measured on {machine['chip']} ({machine['backend']}, mlx {machine.get('mlx')}, "
             f"mlx-vlm {machine.get('mlx_vlm')}); bound = {gbps:.0f} GB/s / bytes read per token "
             "(weights + KV cache at the mean context: median prompt tokens + half the median "
             "generated), from the twins built here with lazy weights "
             "(`python -m benchmarks.twin_bandwidth`). Decode is the median of the samples' "
             "`generation_tps`." + (" The session was interrupted: only the cases it finished."
                                     if doc.get("interrupted") else ""), ""]
    for spec, results in by_model.items():
        weights, kv = decode_bytes(spec)
        lines += model_lines(spec, results, gbps, weights, kv)
    missing = [m for m in doc.get("settings", {}).get("models", []) if m not in by_model]
    if missing:
        lines += [f"Not measured in this report: {', '.join(missing)}.", ""]
    return lines


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("report", type=Path, help="an --mlx-json report of twins")
    cli.add_argument("--gbps", type=float,
                     help="memory bandwidth in GB/s (default: the published figure of the report's chip)")
    args = cli.parse_args()
    doc = json.loads(args.report.read_text())
    gbps = args.gbps or lookup_gbps(doc["machine"])
    if not gbps:
        cli.error(f"no published bandwidth for {doc['machine'].get('chip')!r}: pass --gbps")
    print("\n".join(report_lines(doc, gbps, str(args.report))).rstrip())


if __name__ == "__main__":
    main()
