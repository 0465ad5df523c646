"""Options and ini settings, declared in one table, and the one lookup that resolves them.

Every option is a row of ``OPTIONS``: its flag, the group it is shown in, its help, and how
argparse reads it. Each is mirrored by an ini setting of the same name (``--mlx-rounds`` ->
``mlx_rounds``) unless ``ini=False``. To add one:

1. add an ``Option(...)`` row under the group's heading below (``GROUPS`` says what each
   group is for; keep a group at 12 shown options or fewer, ``tests/test_options.py`` checks);
2. read it in ``resolve.py`` by its ini name (``get("mlx_new_thing", default)``), which names
   the flag or the ini key in its errors;
3. pin the new ``pytest --help`` text: ``tests/test_options.py`` says how.

An older spelling stays accepted as a row with ``hidden=True`` (argparse keeps it out of
``--help``; its ini setting says what replaced it), read as a fallback in ``resolve.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from typing import Any

import pytest

from ..config.settings import AB_ESTIMATORS, AB_ORDERS, TOKEN_EVENTS, Settings, SettingsError
from ..config.tolerances import AB_TOLERANCES, DEFAULT_TOLERANCES, describe_tolerances
from ..reports.report import COLUMNS
from ..results import METRICS
from .resolve import flag, resolve
from .rootdir import rootdir_moved_by


@dataclass(frozen=True)
class Group:
    """A heading of ``pytest --help``: the options for one thing a user is doing."""

    key: str
    title: str
    ini_prefix: str = ""  # said before an ini setting's help (the ini list has no groups)


GROUPS: tuple[Group, ...] = (
    Group("workload", "pytest-mlxvlm workload: what each case measures, and how often"),
    Group("gate", "pytest-mlxvlm gate: stored baselines, and when a slower case fails"),
    Group("ab", "pytest-mlxvlm A/B: gate a change by measuring base and head side by side"),
    Group("outputs", "pytest-mlxvlm outputs: reports, history, exports and progress"),
    Group("suites", "pytest-mlxvlm cache, video and batch suites (--mlx-suite cache|video|batch)"),
    Group("server", "pytest-mlxvlm server suite (--mlx-suite server)", "server suite: "),
    Group("serving", "pytest-mlxvlm serving loads of the server suite: concurrency, request rates, "
          "workloads, memory soak", "server suite: "),
    Group("machine", "pytest-mlxvlm machine and worker processes"),
)


@dataclass(frozen=True)
class Option:
    """One command-line option (and, unless ``ini=False``, its ini setting)."""

    flag: str
    group: str  # a Group key
    help: str
    metavar: str | None = None
    kind: str = "value"  # "value", "flag" (on/off), "append" (repeatable), "optional" (value may be left out)
    choices: tuple[str, ...] | None = None
    const: str | None = None  # kind "optional": the value when the flag comes alone
    ini: bool = True  # mirrored by the ini setting of the same name
    hidden: bool = False  # an older spelling: accepted, not listed in --help

    @property
    def dest(self) -> str:
        """The setting's name: the ini key, and ``config.option``'s attribute."""
        return "mlx_quick" if self.flag == "--quick" else self.flag[2:].replace("-", "_")

    @property
    def ini_type(self) -> str:
        return {"flag": "bool", "append": "linelist"}.get(self.kind, "string")


def _ab_tolerances() -> str:
    return describe_tolerances(AB_TOLERANCES)


OPTIONS: tuple[Option, ...] = (
    # -- workload ------------------------------------------------------------------------------
    Option("--mlx-model", "workload",
           "model to measure: a Hugging Face id, a local folder, or synthetic:<name> (built "
           "offline, no download); repeatable (default synthetic:tiny)", "MODEL", kind="append"),
    Option("--quick", "workload",
           "the quick sweep 224², 448², 768², 1024² instead of the full ten sizes (video: 3 "
           "clip configurations instead of ten)", kind="flag"),
    Option("--mlx-resolutions", "workload",
           "image sizes to sweep, e.g. 448x448,1920x1080 (overrides --quick)", "WxH,..."),
    Option("--mlx-max-tokens", "workload", "fixed output length: tokens generated per round "
           "(default 64)", "N"),
    Option("--mlx-rounds", "workload",
           "measured rounds per case: N (default 5), or MIN:MAX: at least MIN, then until the "
           "95%% interval of each median (Speed, Decode, TTFT) is within --mlx-precision of it, "
           "at most MAX rounds or --mlx-case-budget seconds; auto is 5:30", "N|MIN:MAX"),
    Option("--mlx-precision", "workload",
           "with --mlx-rounds MIN:MAX: the target half-width of the medians' 95%% intervals, in "
           "percent (default 3)", "PCT"),
    Option("--mlx-case-budget", "workload",
           "seconds one case may measure before it decides on the rounds (--mlx-rounds MIN:MAX) "
           "or A/B pairs (--mlx-ab-pairs MIN:MAX) it has (default 120; A/B 480)", "SECONDS"),
    Option("--mlx-warmup", "workload", "unmeasured warmup rounds per case (default 1)", "N"),
    Option("--mlx-prompt", "workload", "the prompt sent with each image", "TEXT"),
    Option("--mlx-image", "workload",
           "your own image, resized to each resolution (default: a synthetic pattern)", "PATH"),
    Option("--mlx-suite", "workload",
           "built-in suites to add: auto (default: the image sweep, when --mlx-model is on the "
           "command line and the session has no measured tests of its own), images, cache, all "
           "(images,cache), server, video, batch (these three only by name), or off", "SUITES"),
    Option("--mlx-max-rounds", "workload", "older spelling of --mlx-rounds MIN:MAX's MAX",
           "N", hidden=True),

    # -- gate ----------------------------------------------------------------------------------
    Option("--mlx-baseline-dir", "gate",
           "where baselines live, one folder per chip (default: baselines/ in the rootdir)", "DIR"),
    Option("--mlx-update-baselines", "gate",
           "write the results of passing tests as baselines once the whole session passed: all "
           "(the default) replaces, new writes only cases that have none, add appends this "
           "session (repeat it at other times to give the gate this machine's drift)",
           "all|new|add", kind="optional", choices=("all", "new", "add"), const="all", ini=False),
    Option("--mlx-missing-baseline", "gate", "a case without a baseline: warn (default), fail or skip",
           choices=("warn", "fail", "skip")),
    Option("--mlx-tolerance", "gate",
           "tolerance per metric in percent, e.g. Speed=20, TTFT=25 or Peak_mem=off (metrics as "
           "the tables name them, any case, or the JSON field); repeatable; defaults "
           f"{describe_tolerances(DEFAULT_TOLERANCES)}, A/B {_ab_tolerances()}", "METRIC=PCT",
           kind="append"),
    Option("--mlx-alpha", "gate",
           "significance level of the gate (default 0.05): each metric's test is judged at P, "
           "and the baseline's drift allowance at P / (measured tests x gated metrics), so a "
           "session of unchanged code fails on drift with chance <= P", "P"),
    Option("--mlx-baseline-min-sessions", "gate",
           "a stored baseline fails tests only with at least N sessions recorded at two or more "
           "times an hour apart, or on two or more machines; a weaker one is compared and "
           "reported, not gated (default 3)", "N"),
    Option("--mlx-strict-baselines", "gate",
           "gate with any stored baseline, even one session, one burst or a published reference "
           "figure", kind="flag"),
    Option("--mlx-work", "gate",
           "the work profile of each case (MLX primitives, evals and host syncs per phase, "
           "counted exactly in one untimed round) against the baseline's or the A/B base's: "
           "gate (default: added work fails the test), report (shown, never fails) or off",
           choices=("off", "report", "gate")),
    Option("--mlx-outputs", "gate",
           "generated tokens that differ from the baseline's or the A/B base's (temperature 0): "
           "report (default) or gate (fail the test)", choices=("report", "gate")),
    Option("--mlx-no-confirm", "gate",
           "fail a case on its first measurement: by default a case that regressed is measured "
           "again (confirmation) and fails only if the pooled and the second measurements "
           "regress too; this is faster but fails more often on noise", kind="flag", ini=False),
    Option("--mlx-stale-threshold", "gate",
           "warn that a baseline is stale when a metric improved by more than PCT percent", "PCT"),

    # -- A/B -----------------------------------------------------------------------------------
    Option("--mlx-ab-base", "ab",
           "gate against this git revision (e.g. origin/main): it is checked out into a temporary "
           "worktree and measured side by side with the working tree, pair by pair, in two "
           "worker processes; no stored baseline needed", "REV"),
    Option("--mlx-ab-python", "ab",
           "the base side's Python interpreter or virtual environment (other mlx / mlx-vlm "
           "versions); alone: the same code under another environment", "PATH"),
    Option("--mlx-ab-pairs", "ab",
           "pairs of rounds per case: N, or MIN:MAX: at least MIN, stopping once the verdict is "
           "clear, at most MAX or --mlx-case-budget seconds (default 20:40)", "N|MIN:MAX"),
    Option("--mlx-ab-estimator", "ab",
           "how a metric's change is measured: median (default): the Hodges-Lehmann median "
           "of the per-pair ratios with the Wilcoxon signed-rank interval; fast: the fast end "
           "of each side (the 90th percentile of tok/s, the 10th of times) with a paired "
           "bootstrap interval, since a busy host only ever slows rounds (see docs/ab.md)",
           choices=AB_ESTIMATORS),
    Option("--mlx-ab-order", "ab",
           "how the sides take their rounds: barrier (default): both prefills in turn, each "
           "alone (TTFT alone), then both decodes released together (the host's noise meets "
           "both; a decode change reads larger than alone); turns: one side at a time, in "
           "ABBA order; duet: both generate at once (two prefills of large images collide "
           "and can favour one side's TTFT); staggered: at once, the side asked second "
           "starting when the first has its first token (see docs/ab.md)", choices=AB_ORDERS),
    Option("--mlx-ab-inconclusive", "ab",
           "what an inconclusive case does (no regression, but an interval too wide to rule one "
           "out): pass (default: reported, not failed) or fail", choices=("pass", "fail")),
    Option("--mlx-ab-budget", "ab", "older spelling of --mlx-case-budget in the A/B mode",
           "SECONDS", hidden=True),

    # -- outputs -------------------------------------------------------------------------------
    Option("--mlx-json", "outputs",
           "write every sample, the settings each test used and the machine to PATH", "PATH"),
    Option("--mlx-markdown", "outputs",
           "write a pull-request comment (Markdown) to PATH; also appended to "
           "$GITHUB_STEP_SUMMARY when set", "PATH"),
    Option("--mlx-history", "outputs",
           "append this session (commit, branch, date, machine, settings, every sample) as one "
           "line to a history file, or as one transaction to a database: sqlite:///FILE.db or "
           "postgresql://USER@HOST/DB", "PATH|URL"),
    Option("--mlx-bmf", "outputs",
           "write the medians with their 95%% intervals in Bencher Metric Format to PATH", "PATH"),
    Option("--mlx-github-benchmark", "outputs",
           "write github-action-benchmark files to DIR: customBiggerIsBetter.json (tok/s) and "
           "customSmallerIsBetter.json (seconds, memory)", "DIR"),
    Option("--mlx-pytest-benchmark", "outputs",
           "hand the measurements to pytest-benchmark too (its table, its .benchmarks/ storage "
           "and its --benchmark-* options); any --benchmark-* option does the same", kind="flag"),
    Option("--mlx-progress", "outputs",
           "without -v, a progress line (where the session is, the time left) at most every "
           "SECONDS (default 10); 0: one per finished case, as with -v; off: none", "SECONDS|off"),

    # -- cache, video and batch suites ---------------------------------------------------------
    Option("--mlx-cache-engine", "suites",
           "cache suite: prefix-cache engines to check: apc, prompt-cache, vllm-mlx, your own "
           "(hook), or all available (default); repeatable", "NAME", kind="append"),
    Option("--mlx-video", "suites",
           "video suite: your own clip, re-encoded at --mlx-video-size (default: a synthetic 10 s "
           "clip)", "PATH"),
    Option("--mlx-video-configs", "suites",
           "video suite: frames@fps per case, e.g. 4@1,16@2 (default: ten from 2@0.5 to 64@8; "
           "--quick: 4@1,8@2,16@2)", "FRAMES@FPS,..."),
    Option("--mlx-video-size", "suites", "video suite: frame size of the clip (default 640x360)", "WxH"),
    Option("--mlx-batch-sizes", "suites",
           "batch suite: requests per mlx_vlm.batch_generate call (default 1,2,4,8)", "N,..."),

    # -- server suite --------------------------------------------------------------------------
    Option("--mlx-server-url", "server",
           "measure the server running at URL (OpenAI-compatible chat completions) instead of "
           "starting one; nothing is started or stopped", "URL"),
    Option("--mlx-server", "server",
           "the server to start: mlx_vlm (python -m mlx_vlm.server, default) or vllm-mlx "
           "(vllm-mlx serve --mllm)", "KIND"),
    Option("--mlx-server-token-events", "server",
           "what marks a generated token in the server's stream: content (a chunk that carries "
           "text) or chunks (every chunk after the role's, text or not: for a server that sends "
           "one chunk per token and may hold text back, as vllm-mlx does); default: chunks for "
           "--mlx-server vllm-mlx, content otherwise", choices=TOKEN_EVENTS),
    Option("--mlx-server-port", "server",
           "the 127.0.0.1 port of the server started here (default 0: a free one)", "PORT"),
    Option("--mlx-server-timeout", "server",
           "seconds the server may take to become ready, and a request to its first token or "
           "between two tokens; a whole request gets one more per 64 tokens asked for (default 300)",
           "SECONDS"),
    Option("--mlx-server-args", "server",
           "more arguments for the server started here, e.g. '--max-num-seqs 4'", "ARGS"),

    # -- serving loads (docs/serving.md) -------------------------------------------------------
    Option("--mlx-server-concurrency", "serving",
           "numbers of concurrent clients of the concurrency sweep (default 1,2,4)", "N,..."),
    Option("--mlx-server-concurrency-mode", "serving",
           "continuous (default: N requests in flight, a new one sent as one ends, aggregate = "
           "tokens / duration, as aiperf and vLLM's bench serve) or synchronized-rounds (N "
           "requests released together, the next round when all have ended)",
           choices=("continuous", "synchronized-rounds")),
    Option("--mlx-server-requests", "serving",
           "requests of each concurrency and rate case (default: --mlx-rounds x clients; 32 per "
           "rate)", "N"),
    Option("--mlx-server-duration", "serving",
           "measure each concurrency and rate case for SECONDS instead of a count", "SECONDS"),
    Option("--mlx-server-rates", "serving",
           "open-loop cases at these request rates per second (e.g. 0.5,1,2), or sweep[:N]: N "
           "rates from 1/4 of the server's measured capacity up, to find the knee", "RATES|sweep[:N]"),
    Option("--mlx-server-arrivals", "serving",
           "arrivals of the rate cases: poisson (default, seeded) or constant",
           choices=("poisson", "constant")),
    Option("--mlx-server-slo", "serving",
           "service-level objectives per request in ms, e.g. ttft=500,itl=50 (also tpot, e2e): "
           "goodput counts the requests that meet all of them", "NAME=MS,..."),
    Option("--mlx-server-workload", "serving",
           "workload cases from JSONL files (aiperf's single_turn / multi_turn shape: text, "
           "image, output_length; session_id, turns) or built-in mixed, multiturn", "PATH|NAME,..."),
    Option("--mlx-server-soak", "serving",
           "a memory soak of N requests (or Ns seconds): the server's memory sampled over time, "
           "a leak fails", "N|SECONDSs"),
    Option("--mlx-server-leak-threshold", "serving",
           "the soak fails when memory grows by more than MB per 100 requests, beyond its 95%% "
           "interval (default 8)", "MB"),
    Option("--mlx-server-records", "serving",
           "write each case's requests to DIR (CASE.jsonl, one line a request, and CASE.csv)", "DIR"),

    # -- machine and worker processes ----------------------------------------------------------
    Option("--mlx-chip", "machine",
           "override this machine's chip key, which names its baseline folder (also "
           "$PYTEST_MLXVLM_CHIP)", "KEY"),
    Option("--mlx-bandwidth", "machine",
           "memory bandwidth of this machine in GB/s, for the '%% of BW limit' column (default: "
           "the published figure of a known Apple or NVIDIA chip)", "GBPS"),
    Option("--mlx-isolate", "machine",
           "measure each model in a worker process: a case whose generation crashes the "
           "interpreter or is killed fails alone, with the signal and the worker's last output, "
           "and the next case gets a fresh worker", kind="flag"),
    Option("--mlx-worker-timeout", "machine",
           "seconds one generation in a worker (--mlx-isolate, A/B) may take before the worker "
           "counts as hung and is stopped (default 600)", "SECONDS"),
)

# Ini settings with no command-line flag.
INI_ONLY: tuple[tuple[str, str, str], ...] = (
    ("mlx_cache_expect", "cache suite: override expected outcomes: lines 'ENGINE: STEP = HIT|PARTIAL|MISS'",
     "linelist"),
)


def add_options(parser: pytest.Parser) -> None:
    """Every option of ``OPTIONS`` in its group, and its ini setting of the same name."""
    groups = {g.key: parser.getgroup(f"mlxvlm-{g.key}", g.title) for g in GROUPS}
    prefixes = {g.key: g.ini_prefix for g in GROUPS}
    for option in OPTIONS:
        kw: dict[str, Any] = {"dest": option.dest, "default": None}
        if option.kind == "flag":
            kw["action"] = "store_true"
        else:
            kw["metavar"] = option.metavar or (None if option.choices else "VALUE")
            if option.kind == "append":
                kw["action"] = "append"
            if option.kind == "optional":
                kw.update(nargs="?", const=option.const)
            if option.choices:
                kw["choices"] = option.choices
        shown = option.help + (f" [ini: {option.dest}]" if option.ini else "")
        kw["help"] = argparse.SUPPRESS if option.hidden else shown
        groups[option.group].addoption(option.flag, **kw)
        if option.ini:
            ini_help = prefixes[option.group] + option.help.replace("%%", "%")
            parser.addini(option.dest, ini_help, type=option.ini_type)  # type: ignore[arg-type]
    for name, ini_help, ini_type in INI_ONLY:
        parser.addini(name, ini_help, type=ini_type)  # type: ignore[arg-type]


CLI_ONLY = frozenset(o.dest for o in OPTIONS if not o.ini)
FLAGS = frozenset(o.dest for o in OPTIONS if o.kind == "flag")


def ini_value(config: pytest.Config, name: str) -> Any:
    """An ini setting's value, None when unset or unreadable."""
    try:
        value = config.getini(name)
    except ValueError:
        return None
    return value if value not in ("", [], None) else None


def lookup(config: pytest.Config) -> Any:
    """The lookup of a setting: the command line over the ini file, with where it came from."""
    def find(name: str) -> tuple[Any, str | None]:
        value = getattr(config.option, name, None)
        if value is not None and value is not False:
            return value, flag(name)
        if name in CLI_ONLY:
            return None, None
        try:
            raw = config.getini(name)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"ini {name}: {exc}") from None
        if raw in ("", [], None) or (name in FLAGS and raw is False):
            return None, None
        return raw, f"ini {name}"
    return find


def settings_from_config(config: pytest.Config) -> Settings:
    """The session's settings; a bad value stops the run with one line that says what to write."""
    moved = rootdir_moved_by(config)
    if moved:
        raise pytest.UsageError(f"pytest-mlxvlm: {moved}")
    try:
        return resolve(lookup(config), base_dir=config.invocation_params.dir, rootdir=config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None


def benchmark_requested(config: pytest.Config) -> bool:
    """Did the user ask for pytest-benchmark: ``--mlx-pytest-benchmark`` (or its ini
    setting), or any ``--benchmark-*`` option (command line, ini addopts or $PYTEST_ADDOPTS)?"""
    if getattr(config.option, "mlx_pytest_benchmark", None) or ini_value(config, "mlx_pytest_benchmark"):
        return True
    args = [*map(str, config.invocation_params.args), *(ini_value(config, "addopts") or []),
            *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    return any(arg.startswith("--benchmark-") for arg in args)


def options_markdown() -> str:
    """The options by group as Markdown tables (docs/usage.md holds this text; a test checks)."""
    def cell(text: str) -> str:
        return text.replace("%%", "%").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    lines: list[str] = []
    for group in GROUPS:
        lines += [f"### {group.title.removeprefix('pytest-mlxvlm ')}", "", "| option | ini | meaning |",
                  "| --- | --- | --- |"]
        for o in OPTIONS:
            if o.group != group.key or o.hidden:
                continue
            value = "|".join(o.choices) if o.choices and not o.metavar else o.metavar or ""
            usage = o.flag if o.kind == "flag" else (
                f"{o.flag}[={value}]" if o.kind == "optional" else f"{o.flag} {value}")
            lines.append(f"| `{cell(usage)}` | {f'`{o.dest}`' if o.ini else ''} | {cell(o.help)} |")
        lines.append("")
    hidden = [o for o in OPTIONS if o.hidden]
    if hidden:
        lines.append("Older spellings, still accepted and left out of `pytest --help`: "
                     + "; ".join(f"`{o.flag}` ({o.help})" for o in hidden) + ".")
    return "\n".join(lines).rstrip() + "\n"


def metrics_markdown() -> str:
    """The metric vocabulary as a Markdown table (docs/usage.md holds this text; a test checks)."""
    lines = ["| JSON field | table column | label (messages) | unit | better | tolerance by default (A/B) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in METRICS.items():
        default = DEFAULT_TOLERANCES.get(name)
        ab = AB_TOLERANCES.get(name)
        gated = "token count: compared exactly" if m.better == "exact" else (
            f"{default * 100:g}% ({ab * 100:g}%)" if default is not None and ab is not None else "no")
        column = m.heading if m.heading in COLUMNS else "(JSON only)"
        lines.append(f"| `{name}` | {column} | {m.label} | {m.unit} | {m.better} | {gated} |")
    return "\n".join(lines) + "\n"
