"""The ``pytest-mlxvlm`` command: compare two result files, merge reports, import a history,
reference baselines and vllm-mlx results; the ``report`` and ``bisect`` commands live in their
own modules (``cli/report.py``, ``cli/bisect.py``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from ..common.files import atomic_write_text, locked, write_json
from ..common.machine import slug
from ..common.validate import InvalidInput, get, join, lst, number, obj, read_json, show, text
from ..config.tolerances import (
    DEFAULT_TOLERANCES,
    ToleranceError,
    describe_tolerances,
    merge_tolerances,
    parse_tolerances,
)
from ..gate import baselines
from ..gate.compare import compare_metric, token_differences
from ..gate.power import equal_samples_needed
from ..models.loading import model_slug
from ..reports.history import read
from ..reports.merge import MergeError, check_report, load, markdown, merged_document
from ..reports.store import StoreError, hide_password, open_store
from ..results import METRICS
from . import bisect, report

SUITE_KEY = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[{}]"
DEFAULT_REFERENCE_TOLERANCE = 0.30
VLLM_MLX_METHOD = (
    "vllm-mlx-bench image benchmark: one run per resolution after one warmup, temperature "
    "0.7 (variable output length), time is the whole generate() call; only end-to-end tok/s "
    "is comparable, with a wide tolerance"
)


DESCRIPTION = ("The pytest-mlxvlm command: reference baselines, comparing and merging reports, "
               "moving histories, and the nightly report. 'pytest-mlxvlm COMMAND --help' documents each.")
EXIT_STATUS = ("Exit status: 0 fine; 1 a regression found (compare, report), or nothing to look for "
               "(bisect); 2 bad input, or (compare) comparisons too small to decide. Errors are one "
               "line on stderr.")


class ImportError_(InvalidInput):
    """Input that cannot be imported; the message says why."""


def chip_key(chip: str, memory_gb: int | None) -> str:
    """The key machine.py derives on that machine: ``apple-m4-max-128gb``."""
    return slug(f"{chip} {memory_gb}gb" if memory_gb else chip)


def reference_file(
    directory: Path,
    *,
    chip: str,
    memory_gb: int | None,
    model: str,
    rows: Sequence[dict[str, Any]],
    method: str,
    source: str,
    tolerance: float,
    extra: dict[str, Any] | None = None,
) -> baselines.BaselineFile:
    """A reference baseline: one published Speed figure per resolution."""
    key = chip_key(chip, memory_gb)
    cases = {}
    for row in rows:
        resolution = f"{int(row['width'])}x{int(row['height'])}"
        speed = float(row["tok_per_s"])
        if not speed > 0 or not math.isfinite(speed):
            raise ImportError_(f"{resolution}: tok/s must be a positive finite number, got {speed}")
        cases[SUITE_KEY.format(resolution)] = baselines.BaselineCase(
            test="test_image_generation",
            resolution=resolution,
            sessions={"end_to_end_tps": [[speed]]},
            workload={"published_time_s": row.get("time_s"), "published_tokens": row.get("tokens")},
        )
    return baselines.BaselineFile(
        path=baselines.reference_path(directory, key, model_slug(model)),
        model=model,
        chip=key,
        kind="reference",
        machine={"chip": chip, "memory_gb": memory_gb, "key": key},
        reference={"source": source, "method": method, "tolerance": tolerance, **(extra or {})},
        cases=cases,
    )


def _row(raw: Any, where: str, names: tuple[str, str, str, str, str]) -> dict[str, Any]:
    """One published result: width, height, tok/s, time and tokens under the file's names."""
    row = obj(raw, where)
    width, height, speed, seconds, tokens = names
    return {
        "width": number(get(row, width, where), join(where, width), positive=True, integer=True),
        "height": number(get(row, height, where), join(where, height), positive=True, integer=True),
        "tok_per_s": number(get(row, speed, where), join(where, speed), positive=True),
        "time_s": number(row.get(seconds), join(where, seconds), optional=True, minimum=0),
        "tokens": number(row.get(tokens), join(where, tokens), optional=True, minimum=0, integer=True),
    }


def from_shared_reference(doc: Any, directory: Path, tolerance: float) -> list[baselines.BaselineFile]:
    """Files from the published-results format (``runs`` with chip, memory and results)."""
    doc = obj(doc, "")
    method = text(doc.get("method"), "method", optional=True) or VLLM_MLX_METHOD
    source = text(doc.get("source"), "source", optional=True) or "published"
    files = []
    for i, run in enumerate(lst(doc.get("runs"), "runs", optional=True)):
        where = join("runs", i)
        run = obj(run, where)
        rows = [_row(r, join(join(where, "results"), j), ("width", "height", "tok_per_s", "time_s", "tokens"))
                for j, r in enumerate(lst(get(run, "results", where), join(where, "results")))]
        extra = {k: run[k] for k in ("mode", "served", "summary", "aggregate") if k in run}
        files.append(reference_file(
            directory, chip=text(get(run, "chip", where), join(where, "chip")),
            memory_gb=number(run.get("memory_gb"), join(where, "memory_gb"), optional=True, positive=True,
                             integer=True),
            model=text(get(run, "model", where), join(where, "model")),
            rows=rows, method=method, source=source, tolerance=tolerance, extra=extra,
        ))
    return files


def from_vllm_mlx_bench(doc: Any, directory: Path, *, chip: str, memory_gb: int | None,
                        tolerance: float, model: str | None) -> baselines.BaselineFile:
    """A file from the JSON that ``vllm-mlx-bench --output`` writes for images."""
    doc = obj(doc, "")
    if doc.get("type") != "mllm_image":
        raise ImportError_(f"not an image benchmark (type {show(doc.get('type'))}); "
                           "run vllm-mlx-bench on a vision model without --video")
    names = ("width", "height", "tokens_per_second", "time_seconds", "tokens_generated")
    rows = [_row(r, join("results", i), names) for i, r in enumerate(lst(doc.get("results"), "results",
                                                                           optional=True))]
    if not rows:
        raise ImportError_("no results in the file")
    if model is None:
        model = text(get(doc, "model"), "model")
    return reference_file(
        directory, chip=chip, memory_gb=memory_gb, model=model, rows=rows,
        method=VLLM_MLX_METHOD, source="vllm-mlx-bench --output", tolerance=tolerance,
        extra={"test_image": text(doc.get("test_image"), "test_image", optional=True)},
    )


def write(files: Sequence[baselines.BaselineFile], force: bool) -> None:
    """Every file or none: two runs that would share a file, or a file there already (without
    ``force``), are refused before anything is written."""
    paths = [f.path for f in files]
    twice = sorted({str(path) for path in paths if paths.count(path) > 1})
    if twice:
        raise ImportError_(f"two runs of the input would both be {twice[0]} (the same chip and model); "
                           "import them from separate files, each into its own --baseline-dir")
    there = [f.path for f in files if f.path.exists()]
    if there and not force:
        raise ImportError_(f"{there[0]} exists{f' (and {len(there) - 1} more)' if len(there) > 1 else ''}; "
                           "pass --force to replace it; nothing was written")
    for f in files:
        with locked(f.path):
            if f.path.exists() and not force:
                raise ImportError_(f"{f.path} exists; pass --force to replace it")
            atomic_write_text(f.path, f.to_json())
        print(f"wrote {f.path} ({len(f.cases)} cases, reference for {f.chip})")


def case_id(result: dict[str, Any]) -> tuple[str, str]:
    """A case of a --mlx-json report as ``compare`` matches it: its model and key."""
    return result["model"], result.get("case_key") or result["resolution"]


def compare_reports(before: dict[str, Any], after: dict[str, Any], tolerances: dict[str, float],
                    alpha: float) -> tuple[list[str], int, list[str]]:
    """Lines of a Markdown table comparing two --mlx-json reports, how many regressed, and the
    comparisons that could not be decided (too few samples to ever reach p < alpha)."""

    def cases(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, list[float]]]:
        return {case_id(r): {m: [s[m] for s in r["samples"]] for m in METRICS} for r in doc["results"]}

    old, new = cases(before), cases(after)
    lines = ["| Model | Case | Metric | Before | After | Change | Smallest detectable | Verdict |",
             "|---|---|---|---|---|---|---|---|"]
    regressed = 0
    undecided: list[str] = []
    for key in sorted(set(old) & set(new)):
        changed = token_differences(old[key], new[key])
        if changed:
            what = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items())
            lines.append(f"| {key[0]} | `{key[1]}` | workload | | | | | changed: {what} |")
            regressed += 1
            continue
        for metric, tol in tolerances.items():
            c = compare_metric(metric, old[key][metric], new[key][metric], tol, alpha)
            regressed += c.verdict == "regressed"
            detectable = "none" if c.detectable is None else f"{c.detectable * 100:.0f}%"
            if c.verdict == "undecidable":
                need = equal_samples_needed(alpha)
                verdict = (f"undecidable at n={c.n_baseline} vs {c.n_current} (smallest detectable: "
                           f"none; p < {alpha:g} needs {need} samples each)")
                undecided.append(f"{key[1]} {METRICS[metric].label}")
            else:
                verdict = f"{c.verdict} (p={c.p_value:.2g})"
            lines.append(f"| {key[0]} | `{key[1]}` | {METRICS[metric].label} | {c.baseline:.4g} | "
                         f"{c.current:.4g} | {c.change * 100:+.1f}% | {detectable} | {verdict} |")
    for key in sorted(set(old) ^ set(new)):
        lines.append(f"| {key[0]} | `{key[1]}` | | | | | | only in {'before' if key in old else 'after'} |")
    return lines, regressed, undecided


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), as every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pytest-mlxvlm: {message} (see {self.prog} --help)\n")


def _ranged(low: float, high: float, what: str, *, include_low: bool = False) -> Any:
    """An argparse type: a finite number with low < value < high (or low <= value)."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        inside = (low <= x if include_low else low < x) and x < high
        if not (math.isfinite(x) and inside):
            raise argparse.ArgumentTypeError(f"{value!r}: {what}")
        return x
    return parse


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must be positive")
    return n


def _fail(message: str) -> int:
    print(f"pytest-mlxvlm: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, 1 for a regression found (compare, report), 2 for bad input; errors are
    one line on stderr."""
    parser = _Parser(prog="pytest-mlxvlm", description=DESCRIPTION, epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, epilog=EXIT_STATUS,
                              description=f"{summary[0].upper()}{summary[1:]}.{' ' + details if details else ''}")

    ref = command("import-reference", "write reference baselines from published results",
                  "The file holds runs, each with chip, memory_gb, model and results (width, height, "
                  "tok_per_s); one reference file per chip and model is written under --baseline-dir. "
                  "A reference is compared and reported (Speed only), never gated.")
    ref.add_argument("file", type=Path, help="the published results (JSON), e.g. "
                     "docs/reference/vllm-mlx-image-benchmarks.json")
    bench = command("import-vllm-mlx", "write a reference baseline from vllm-mlx-bench --output",
                    "The JSON that vllm-mlx-bench writes for an image benchmark becomes the reference "
                    "of the chip you name (vllm-mlx does not record it).")
    bench.add_argument("file", type=Path, help="the JSON of vllm-mlx-bench --output")
    bench.add_argument("--chip", required=True, metavar="NAME", help="the chip it ran on, e.g. 'Apple M4 Max'")
    bench.add_argument("--memory-gb", type=_positive_int, required=True, metavar="GB",
                       help="the machine's memory in GB (chip and memory name the baseline folder)")
    bench.add_argument("--model", default=None, metavar="ID", help="model id (default: the file's)")
    cmp = command("compare", "compare two --mlx-json reports with the gate's rules",
                  "Per case and gated metric: the change, the smallest regression these samples "
                  "could detect, and the verdict (a one-sided Mann-Whitney test at --alpha and the "
                  "tolerance; token counts exactly). A comparison whose samples are too few to ever "
                  "reach p < alpha is undecidable, not ok.")
    cmp.add_argument("before", type=Path, help="the earlier --mlx-json report (the baseline)")
    cmp.add_argument("after", type=Path, help="the later --mlx-json report")
    cmp.add_argument("--tolerance", action="append", default=[], metavar="METRIC=PCT",
                     help="tolerance per metric in percent, named as the tables name it "
                     "(Speed=20, ttft=25, 'Peak mem=off') or by its JSON field; repeatable; "
                     f"defaults {describe_tolerances(DEFAULT_TOLERANCES)}")
    cmp.add_argument("--alpha", type=_ranged(0, 1, "the significance level is between 0 and 1, e.g. 0.05"),
                     default=0.05, metavar="P", help="significance level of each metric's test (default 0.05)")
    cmp.add_argument("--other-chip", action="store_true",
                     help="compare even when the two reports come from different chips")
    report.add_parser(sub, epilog=EXIT_STATUS)
    bisect.add_parser(sub)
    hist = command("history", "move a history between stores")
    hist_sub = hist.add_subparsers(dest="history_command", required=True, metavar="SUBCOMMAND")
    imp = hist_sub.add_parser("import", help="copy every session of a JSON-lines history into a "
                              "store, in one transaction; sessions already there are skipped",
                              description="Copy every session of a JSON-lines history into a store, "
                              "in one transaction; sessions already there are skipped, bad lines "
                              "reported and skipped.")
    imp.add_argument("source", type=Path, help="a --mlx-history JSON-lines file")
    imp.add_argument("target", help="sqlite:///FILE.db, postgresql://... or another file")
    mrg = command("merge", "put --mlx-json reports of several machines into one report, grouped by chip",
                  "A table of every case's Speed per chip, then each chip's full tables; results "
                  "of different chips never share a cell.")
    mrg.add_argument("reports", type=Path, nargs="+", help="--mlx-json reports (a CI matrix's)")
    mrg.add_argument("--out", type=Path, default=None, metavar="FILE", help="Markdown file (default: stdout)")
    mrg.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the merged JSON here")
    for p in (ref, bench):
        p.add_argument("--baseline-dir", type=Path, default=Path("baselines"), metavar="DIR",
                       help="where baselines live, one folder per chip (default baselines)")
        p.add_argument("--tolerance", type=_ranged(0, 1000, "a percentage from 0 to 1000", include_low=True),
                       default=DEFAULT_REFERENCE_TOLERANCE * 100, metavar="PCT",
                       help="the reference's Speed tolerance in percent (default 30: its method differs)")
        p.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return _compare(args)
    if args.command == "report":
        return report.run(args)
    if args.command == "bisect":
        return bisect.run(args)
    if args.command == "merge":
        return _merge(args)
    if args.command == "history":
        return _history_import(args)
    try:
        doc = read_json(args.file)  # NaN and Infinity are refused: never in a baseline
        tolerance = args.tolerance / 100
        if args.command == "import-reference":
            files = from_shared_reference(doc, args.baseline_dir, tolerance)
        else:
            files = [from_vllm_mlx_bench(doc, args.baseline_dir, chip=args.chip,
                                         memory_gb=args.memory_gb, tolerance=tolerance,
                                         model=args.model)]
        write(files, args.force)
    except (OSError, InvalidInput) as exc:  # BaselineError and ImportError_ included
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else exc
        return _fail(f"cannot import {args.file}: {detail}")
    return 0


def _read_report(path: Path) -> dict[str, Any]:
    """A --mlx-json report (or a document of its shape) for compare; InvalidInput names the file."""
    try:
        return check_report(read_json(path, nonfinite=True), full=False)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None


def _compare(args: argparse.Namespace) -> int:

    try:
        before, after = _read_report(args.before), _read_report(args.after)
        tolerances = merge_tolerances(parse_tolerances(args.tolerance))
    except (InvalidInput, ToleranceError) as exc:
        return _fail(f"cannot compare: {exc}")
    chips = before["machine"]["key"], after["machine"]["key"]
    if chips[0] != chips[1] and not args.other_chip:
        return _fail(f"{args.before} is from {chips[0]}, {args.after} from {chips[1]}: results of "
                     "different chips are not compared (--other-chip to do it anyway)")
    keys = [{case_id(r) for r in doc["results"]} for doc in (before, after)]
    if not keys[0] & keys[1]:
        return _fail(f"{args.before} and {args.after} have no case in common ({len(keys[0])} and "
                     f"{len(keys[1])} cases): nothing to compare; were they measured with the same model and tests?")
    lines, regressed, undecided = compare_reports(before, after, tolerances, args.alpha)
    print("\n".join(lines))
    if keys[0] - keys[1]:
        print(f"pytest-mlxvlm: {len(keys[0] - keys[1])} case(s) of {args.before} are not in {args.after} "
              "(failed, skipped or deselected there?): they are not compared", file=sys.stderr)
    print(f"\n{regressed} regressed" + (f", {len(undecided)} undecidable" if undecided else ""))
    if regressed:
        return 1
    if undecided:
        need = equal_samples_needed(args.alpha)
        print(f"pytest-mlxvlm: cannot decide {len(undecided)} comparison(s) ({', '.join(undecided[:3])}"
              f"{', ...' if len(undecided) > 3 else ''}): too few samples to reach p < {args.alpha:g}, "
              f"so a regression of any size would pass unseen; measure at least {need} rounds in each "
              "report (--mlx-rounds)", file=sys.stderr)
        return 2
    return 0


def _merge(args: argparse.Namespace) -> int:

    try:
        reports = [load(path) for path in args.reports]
    except MergeError as exc:
        return _fail(f"cannot merge: {exc}")
    document = markdown(reports)
    try:
        if args.out is None:
            print(document)
        else:
            atomic_write_text(args.out, document)
            print(f"merged report written to {args.out}")
        if args.json is not None:
            write_json(args.json, merged_document(reports))
            print(f"merged JSON written to {args.json}")
    except OSError as exc:
        return _fail(f"cannot write {exc.filename or args.out or args.json}: {exc.strerror or exc}")
    return 0


def _history_import(args: argparse.Namespace) -> int:
    """``history import FILE URL``: all the file's usable sessions, or none of them."""
    try:
        history = read(args.source)
    except StoreError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read {args.source}: {exc.strerror or exc}")
    report.print_problems(history.problems)
    try:
        store = open_store(args.target)
        added = store.append_many(history.records)
    except OSError as exc:
        return _fail(str(exc) if isinstance(exc, StoreError) else f"cannot write {args.target}: {exc.strerror or exc}")
    print(f"{added} session(s) imported into {hide_password(str(args.target))}, "
          f"{len(history.records) - added} already there, {len(history.problems)} line(s) skipped")
    return 0
