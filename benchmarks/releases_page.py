"""docs/releases.md, its tables and plots, from a campaign of benchmarks/releases.py.

The tables and plots of docs/releases.md from a campaign of benchmarks/releases.py: per release
Speed, TTFT, Decode and peak memory at the --quick sizes, cache-suite outcomes per engine, the
change points with their A/B checks, and the A/B runs between neighbouring releases::

    python -m benchmarks.releases_page docs/results/cpu/releases/vlm   # writes tables.md, releases.png

A folder of benchmarks/releases_gpu.sh (no campaign.json: ``<release>.json`` per release and
``history.jsonl``) gives the same tables: the campaign read from the sessions, the change points
from the history, its A/B runs named by their ``ab-<base>-<head>-<sizes>.txt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from pytest_mlxvlm.common.files import atomic_write_text

SIZES = ("224x224", "448x448", "768x768", "1024x1024")
COLUMNS = (("end_to_end_tps", "Speed", "tok/s", 1.0, "{:.1f}"), ("ttft_s", "TTFT", "ms", 1000.0, "{:.0f}"),
           ("generation_tps", "Decode", "tok/s", 1.0, "{:.1f}"), ("peak_memory", "Peak memory", "MB", 1000.0, "{:.0f}"))


def load(path: Path) -> Any:
    """A JSON file, None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def campaign_of(folder: Path) -> dict[str, Any]:
    """campaign.json; for a folder of benchmarks/releases_gpu.sh the same fields from its sessions."""
    campaign = load(folder / "campaign.json")
    if campaign is not None or not (folder / "history.jsonl").exists():
        return campaign or {}
    sessions = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]
    settings = sessions[0].get("settings", {}) if sessions else {}
    return {"model": ", ".join(settings.get("models", [])), "rounds": settings.get("rounds"),
            "max_tokens": settings.get("max_tokens"), "varying": "mlxvlm", "gpu": True,
            "machine": sessions[0].get("machine", {}).get("chip") if sessions else None,
            "pairs": [{"mlx": s.get("machine", {}).get("mlx"), "mlxvlm": s.get("commit"),
                       "images": f"{s.get('commit')}.json"} for s in sessions]}


def images_of(folder: Path, pair: dict[str, Any]) -> Any:
    """A release's images report: envs/<pair>/images.json, or the file the pair names."""
    if "images" in pair:
        return load(folder / pair["images"])
    return load(folder / "envs" / f"{pair['mlx']}-{pair['mlxvlm']}" / "images.json")


def medians(report: dict[str, Any] | None) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(resolution, metric) -> (median, relative spread as cv, rounds) of an images report."""
    table: dict[tuple[str, str], tuple[float, float, int]] = {}
    for result in (report or {}).get("results", []):
        for metric, summary in (result.get("summary") or {}).items():
            if isinstance(summary, dict) and "median" in summary:
                table[(result.get("resolution"), metric)] = (summary["median"], summary.get("cv") or 0.0,
                                                             summary.get("n", 0))
    return table


def cache_outcomes(report: dict[str, Any] | None) -> dict[str, str]:
    """Engine -> "as expected / steps, hits, wrong outputs" of a cache-suite report."""
    counts: dict[str, list[int]] = {}
    for record in (report or {}).get("cache", []):
        engine = record.get("engine", "?")
        row = counts.setdefault(engine, [0, 0, 0, 0, 0])
        for step in record.get("steps", []):
            row[0] += bool(step.get("passed"))
            row[1] += 1
            row[2] += step.get("outcome") in ("HIT", "PARTIAL") and not step.get("error")
            row[3] += step.get("correct") is False
            row[4] += bool(step.get("error"))
    return {engine: f"{p}/{n} as expected; {h} reused; {w} wrong output" + (f"; {e} errors" if e else "")
            for engine, (p, n, h, w, e) in counts.items()}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def ab_line(verdict: dict[str, Any]) -> str:
    """One A/B check in words: per metric the change [interval] and verdict."""
    if verdict.get("status") != "measured":
        return f"not measured: {verdict.get('reason', '')}"
    parts = []
    for metric, m in verdict["metrics"].items():
        if metric.startswith("_") or m.get("change") is None:
            continue
        interval = m.get("interval") or [None, None]
        parts.append(f"{metric} {pct(m['change'])} [{pct(interval[0])}, {pct(interval[1])}] {m.get('verdict')}")
    case = verdict["metrics"].get("_case", {})
    return "; ".join(parts) + (f" (case: {case.get('verdict')})" if case.get("verdict") else "")


def tables(folder: Path) -> str:
    """The Markdown of a campaign's folder."""
    campaign = campaign_of(folder)
    pairs = campaign.get("pairs", [])
    varying = campaign.get("varying", "mlxvlm")
    plugin = f"plugin {str(campaign.get('plugin_commit'))[:10]}" if not campaign.get("gpu") else campaign.get("machine")
    lines = [f"Model `{campaign.get('model')}`, `--quick` sizes, {campaign.get('rounds')} rounds after 1 warmup, "
             f"{campaign.get('max_tokens')} tokens; {plugin}. "
             "Each cell: median (cv of the rounds).", ""]
    rows: list[tuple[str, dict[tuple[str, str], tuple[float, float, int]], dict[str, str], str]] = []
    for pair in pairs:
        key = f"{pair['mlx']}-{pair['mlxvlm']}"
        env = folder / "envs" / key
        name = (f"mlx-vlm {pair['mlxvlm']}" if varying == "mlxvlm" else f"mlx {pair['mlx']}") + \
            (" (forced)" if pair.get("forced") else "")
        notes = [m.get("reason") for s in ("install", "images", "cache")
                 if (m := load(env / f"{s}.done.json")) and m.get("status") == "skipped"]
        rows.append((name, medians(images_of(folder, pair)), cache_outcomes(load(env / "cache.json")),
                     "; ".join(dict.fromkeys(n for n in notes if n))))  # a reason once, not per step
    for metric, label, unit, scale, fmt in COLUMNS:
        lines += [f"**{label} ({unit})**", "", "| Release | " + " | ".join(SIZES) + " |",
                  "|---|" + "---|" * len(SIZES)]
        for name, table, _, note in rows:
            cells = [f"{fmt.format(table[(s, metric)][0] * scale)} ({table[(s, metric)][1] * 100:.0f}%)"
                     if (s, metric) in table else "-" for s in SIZES]
            if note and not table:  # measured nowhere: its one-line reason in the row, the table's shape kept
                cells = [note] + ["-"] * (len(SIZES) - 1)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    engines = sorted({e for _, _, cache, _ in rows for e in cache})
    if engines:  # a campaign without the cache suite (releases_gpu.sh) has no such table
        lines += ["**Cache suite per engine**", "", "| Release | " + " | ".join(engines) + " |",
                  "|---|" + "---|" * len(engines)]
        for name, _, cache, note in rows:
            lines.append(f"| {name} | " + " | ".join(cache.get(e, note or "-") for e in engines) + " |")
        lines.append("")
    points = (load(folder / "changepoints.json") or {}).get("change_points", [])
    if campaign.get("gpu"):
        from benchmarks.releases import change_points

        points = change_points(folder / "history.jsonl")
    lines += ["**Change points of the nightly report** (`pytest-mlxvlm report history.jsonl`)", ""]
    if not points:
        lines.append("None: nothing beyond noise in any series.")
    else:
        lines += ["| Case | Metric | Between | Change (p) | A/B between exactly those two envs |", "|---|---|---|---|---|"]
        for cp in points:
            res = cp["case"].rsplit("[", 1)[-1].rstrip("]")
            ab = [load(p) for p in sorted((folder / "ab").glob(f"*{res}.done.json"))] if (folder / "ab").exists() else []
            match = [v for v in ab if v and v.get("head", "").endswith(cp["after"].split("+")[0])
                     or v and cp["after"].split("+")[0] in v.get("head", "")]
            gpu_ab = sorted(p.name for p in folder.glob(f"ab-{cp['before']}-{cp['after']}-*.txt"))
            lines.append(f"| `{res}` | {cp['metric']} | {cp['before']} -> {cp['after']} | "
                         f"{pct(cp['change'])} (p={cp['p_value']:.3f}) | "
                         f"{ab_line(match[0]) if match else ', '.join(gpu_ab) or 'not run'} |")
    lines.append("")
    neighbours = sorted((folder / "ab").glob("*.done.json")) if (folder / "ab").exists() else []
    if neighbours:
        lines += ["**A/B runs** (`--mlx-ab-python BASE`, run in the head env; fast-end estimator)", "",
                  "| Base -> head | Size | Result | Smallest detectable |", "|---|---|---|---|"]
        for path in neighbours:
            v = load(path) or {}
            detectable = (v.get("metrics", {}).get("_case") or {}).get("detectable")
            lines.append(f"| {v.get('base')} -> {v.get('head')} | {v.get('resolution')} | {ab_line(v)} | "
                         f"{json.dumps(detectable) if detectable else '-'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(folder: Path, path: Path) -> None:
    """One PNG: Speed, TTFT, Decode and peak memory per release, a line per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaign = campaign_of(folder)
    varying = campaign.get("varying", "mlxvlm")
    pairs = campaign.get("pairs", [])
    names = [p["mlxvlm"] if varying == "mlxvlm" else p["mlx"] for p in pairs]
    tables_ = [medians(images_of(folder, p)) for p in pairs]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), squeeze=False)
    for ax, (metric, label, unit, scale, _) in zip(axes.flat, COLUMNS):
        for size in SIZES:
            ys = [t[(size, metric)][0] * scale if (size, metric) in t else float("nan") for t in tables_]
            ax.plot(range(len(names)), ys, marker="o", lw=1, label=size)
        ax.set_title(f"{label} ({unit})", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{'mlx-vlm' if varying == 'mlxvlm' else 'mlx'} releases, {campaign.get('model')} "
                 f"on {campaign.get('machine') or 'CPU'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Write tables.md and releases.png into each campaign folder named."""
    folders = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not folders:
        print("usage: python -m benchmarks.releases_page CAMPAIGN_FOLDER...", file=sys.stderr)
        return 2
    for folder in folders:
        if not (folder / "campaign.json").exists() and not (folder / "history.jsonl").exists():
            print(f"releases_page: {folder} holds no campaign.json or history.jsonl (run benchmarks/releases.py "
                  "or benchmarks/releases_gpu.sh first)", file=sys.stderr)
            return 2
        atomic_write_text(folder / "tables.md", tables(folder))
        plot(folder, folder / "releases.png")
        print(f"releases_page: wrote {folder / 'tables.md'} and {folder / 'releases.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
