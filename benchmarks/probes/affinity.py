"""Does pinning the process to CPUs steady a launch-bound decode loop? Blocks of rounds, interleaved.

One process, the model loaded once. Cycle after cycle, each CPU set takes a turn: every thread
of the process is pinned to it (``sched_setaffinity`` on each thread; Linux only), one
unmeasured generation, then ``--rounds`` measured ones (the plugin's runner) and a launch probe
(tiny kernels, each evaluated). Drift over time hits every set alike, so the sets' spreads of
block medians compare fairly. Writes one JSON line per block and prints, per set, the median
decode, the per-round CV and the spread of block medians; the steadiest set goes to ``--best``.

    python -m benchmarks.probes.affinity --model synthetic:qwen3-vl-8b-4bit --time-limit 240
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from pytest_mlxvlm.measure.runner import measure_generation

from .._common import append_jsonl, launch_probe, parser, prepare


def format_cpu_list(cpus: set[int] | frozenset[int]) -> str:
    """The short form of a CPU set: ``{2, 3, 4, 8}`` -> ``"2-4,8"``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and cpu == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def allowed() -> frozenset[int]:
    """The CPUs this process may run on now."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset(range(os.cpu_count() or 1))
    return frozenset(os.sched_getaffinity(0))


def pin(cpus: frozenset[int]) -> None:
    """Run every thread of this process (and the threads it starts later) on ``cpus`` only."""
    tasks = Path("/proc/self/task")
    threads = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def topology(cpus: frozenset[int] | None = None) -> dict[int, tuple[int, int]]:
    """CPU -> (package, core) from sysfs; CPUs sharing a core are hyperthread siblings."""
    out: dict[int, tuple[int, int]] = {}
    for cpu in sorted(allowed() if cpus is None else cpus):
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = int((base / "physical_package_id").read_text())
            core = int((base / "core_id").read_text())
        except (OSError, ValueError):
            package, core = 0, cpu
        out[cpu] = (package, core)
    return out


def cpu_sets() -> dict[str, frozenset[int]]:
    """All CPUs, one CPU, a hyperthread pair, and 2 and 4 CPUs on distinct cores of one package."""
    everything = allowed()
    topo = topology(everything)
    # Leave CPU 0 (interrupts) out of the pinned sets where possible.
    cpus = [c for c in sorted(topo) if c != 0] or sorted(topo)
    package = topo[cpus[0]][0]
    distinct: list[int] = []
    seen: set[tuple[int, int]] = set()
    for c in cpus:
        if topo[c][0] == package and topo[c] not in seen:
            seen.add(topo[c])
            distinct.append(c)
    sets = {"all": everything, "one": frozenset(distinct[:1])}
    siblings = [c for c in cpus if topo[c] == topo[distinct[0]]]
    if len(siblings) > 1:
        sets["ht-pair"] = frozenset(siblings[:2])
    if len(distinct) >= 2:
        sets["two-cores"] = frozenset(distinct[:2])
    if len(distinct) >= 4:
        sets["four-cores"] = frozenset(distinct[:4])
    return sets


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--model", default="synthetic:tiny")
    cli.add_argument("--resolution", default="224x224")
    cli.add_argument("--max-tokens", type=int, default=64)
    cli.add_argument("--rounds", type=int, default=4, help="measured rounds per block")
    cli.add_argument("--time-limit", type=float, default=240.0, help="seconds of cycles")
    cli.add_argument("--out", type=Path, default=Path("affinity.jsonl"))
    cli.add_argument("--best", type=Path, default=None, help="write the steadiest set here")
    args = cli.parse_args()

    sets = cpu_sets()
    print("topology (cpu: package, core):", json.dumps(topology(sets["all"])), flush=True)
    print("sets:", {k: format_cpu_list(v) for k, v in sets.items()}, flush=True)
    loaded, _, request = prepare(args.model, args.resolution, args.max_tokens)
    measure_generation(loaded.model, loaded.processor, request)  # compile kernels first

    began = time.perf_counter()
    cycle = 0
    blocks: dict[str, list[dict]] = {name: [] for name in sets}
    while time.perf_counter() - began < args.time_limit:
        for name, cpus in sets.items():
            pin(cpus)
            measure_generation(loaded.model, loaded.processor, request)
            samples = [measure_generation(loaded.model, loaded.processor, request)
                       for _ in range(args.rounds)]
            row = {"cycle": cycle, "set": name, "cpus": format_cpu_list(cpus),
                   "decode": [s.generation_tps for s in samples],
                   "speed": [s.end_to_end_tps for s in samples],
                   "launch_us": launch_probe(1000) * 1e6}
            blocks[name].append(row)
            append_jsonl(args.out, row)
        cycle += 1
        print(f"cycle {cycle}: " + ", ".join(
            f"{n} {statistics.median(b[-1]['decode']):.0f}" for n, b in blocks.items()), flush=True)

    print(f"\n{args.model}, {args.resolution}, {args.max_tokens} tokens, {cycle} cycles of "
          f"{args.rounds} rounds per set")
    print("| CPU set | CPUs | median decode tok/s | CV of rounds | block medians min-max | max/min "
          "| launch probe µs (median) |")
    print("|---|---|---|---|---|---|---|")
    ratio: dict[str, float] = {}
    for name, rows in blocks.items():
        rounds = [v for r in rows for v in r["decode"]]
        meds = [statistics.median(r["decode"]) for r in rows]
        cv = statistics.stdev(rounds) / statistics.mean(rounds) if len(rounds) > 1 else 0.0
        ratio[name] = max(meds) / min(meds)
        print(f"| {name} | {format_cpu_list(sets[name])} | {statistics.median(rounds):.1f} | "
              f"{cv * 100:.1f}% | {min(meds):.1f}-{max(meds):.1f} | {ratio[name]:.2f} | "
              f"{statistics.median(r['launch_us'] for r in rows):.1f} |")
    best = min(ratio, key=ratio.get)  # type: ignore[arg-type]
    print(f"steadiest: {best} ({format_cpu_list(sets[best])})")
    if args.best:
        args.best.write_text(format_cpu_list(sets[best]) if best != "all" else "")


if __name__ == "__main__":
    main()
