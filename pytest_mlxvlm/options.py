"""Options and ini settings, and the one lookup that resolves them into Settings."""

from __future__ import annotations

from typing import Any

import pytest

from .resolve import flag, resolve
from .settings import Settings, SettingsError


def add_options(parser: pytest.Parser) -> None:
    """Every option and its ini setting of the same name."""
    group = parser.getgroup("mlxvlm", "VLM inference benchmarks on MLX (pytest-mlxvlm)")
    gate = parser.getgroup("mlxvlm-baselines", "pytest-mlxvlm baselines and regression gate")

    def mirrored(to: Any, flag: str, ini: str, help: str, *, ini_type: str = "string",
                 **kw: Any) -> None:
        """An option of group ``to`` and the ini setting of the same name."""
        to.addoption(flag, dest=ini, help=f"{help} [ini: {ini}]", **kw)
        parser.addini(ini, help.replace("%%", "%"), type=ini_type)  # type: ignore[arg-type]

    def option(flag: str, ini: str, help: str, **kw: Any) -> None:
        mirrored(group, flag, ini, help, **kw)

    def gate_option(flag: str, ini: str, help: str, **kw: Any) -> None:
        mirrored(gate, flag, ini, help, **kw)

    option(
        "--mlx-model",
        "mlx_model",
        "model to benchmark: Hugging Face id, local path or synthetic:<name> "
        "(repeatable; default synthetic:tiny)",
        ini_type="linelist",
        action="append",
        default=None,
        metavar="MODEL",
    )
    option(
        "--quick",
        "mlx_quick",
        "quick sweep 224², 448², 768², 1024² instead of the full ten sizes",
        ini_type="bool",
        action="store_true",
        default=None,
    )
    option(
        "--mlx-resolutions",
        "mlx_resolutions",
        "image sizes to sweep, e.g. 448x448,1920x1080 (overrides --quick)",
        default=None,
        metavar="WxH,...",
    )
    option("--mlx-max-tokens", "mlx_max_tokens", "fixed output length (default 64)",
           default=None, metavar="N")
    option("--mlx-rounds", "mlx_rounds",
           "measured rounds per case (default 5), or auto: at least 5, then until the 95%% "
           "interval of each median (Speed, Decode, TTFT) is within --mlx-precision of it, "
           "--mlx-max-rounds, or --mlx-case-budget", default=None, metavar="N|auto")
    option("--mlx-precision", "mlx_precision",
           "with --mlx-rounds auto: target half-width of the medians' 95%% intervals, in percent "
           "(default 3)", default=None, metavar="PCT")
    option("--mlx-max-rounds", "mlx_max_rounds", "with --mlx-rounds auto: at most N rounds (default 30)",
           default=None, metavar="N")
    option("--mlx-case-budget", "mlx_case_budget",
           "with --mlx-rounds auto: seconds one case may measure (default 120)", default=None,
           metavar="SECONDS")
    option("--mlx-warmup", "mlx_warmup", "unmeasured warmup runs per case (default 1)",
           default=None, metavar="N")
    option("--mlx-prompt", "mlx_prompt", "prompt sent with each image", default=None,
           metavar="TEXT")
    option("--mlx-image", "mlx_image",
           "your own image, resized to each resolution (default: a synthetic pattern)",
           default=None, metavar="PATH")
    option("--mlx-isolate", "mlx_isolate",
           "measure each model in a worker process: a case whose generation crashes the "
           "interpreter or is killed fails alone, with the signal and the worker's last output, "
           "and the next case gets a fresh worker", ini_type="bool", action="store_true",
           default=None)
    option("--mlx-worker-timeout", "mlx_worker_timeout",
           "seconds one generation in a worker (--mlx-isolate, --mlx-ab-*) may take before the "
           "worker counts as hung and is stopped (default 600)", default=None, metavar="SECONDS")
    option("--mlx-json", "mlx_json", "write every sample, the settings and the machine to PATH",
           default=None, metavar="PATH")
    option("--mlx-history", "mlx_history",
           "append this session's results (commit, branch, date, machine, settings, every "
           "sample) as one line to a history file, or as one transaction to a database: "
           "sqlite:///FILE.db or postgresql://USER@HOST/DB", default=None, metavar="PATH|URL")
    option("--mlx-bmf", "mlx_bmf",
           "write the medians with their 95%% intervals in Bencher Metric Format to PATH",
           default=None, metavar="PATH")
    option("--mlx-github-benchmark", "mlx_github_benchmark",
           "write github-action-benchmark files to DIR: customBiggerIsBetter.json (tok/s) and "
           "customSmallerIsBetter.json (seconds, memory)", default=None, metavar="DIR")
    option("--mlx-chip", "mlx_chip",
           "override the chip key of this machine (also $PYTEST_MLXVLM_CHIP)",
           default=None, metavar="KEY")
    option("--mlx-bandwidth", "mlx_bandwidth",
           "memory bandwidth of this machine in GB/s, for the '%% of BW limit' column "
           "(default: the published figure of a known Apple or NVIDIA chip)",
           default=None, metavar="GBPS")
    option("--mlx-suite", "mlx_suite",
           "built-in suites to run: auto (the image benchmark when --mlx-model is given), "
           "images, cache, all (images,cache), server, video, batch (named only) or off", default=None,
           metavar="SUITES")
    option("--mlx-server-url", "mlx_server_url",
           "server suite: measure the server running at URL (OpenAI-compatible chat completions) "
           "instead of starting mlx_vlm.server; nothing is started or stopped", default=None,
           metavar="URL")
    option("--mlx-server", "mlx_server",
           "server suite: the server to start, mlx_vlm (python -m mlx_vlm.server, default) or "
           "vllm-mlx (vllm-mlx serve --mllm)", default=None, metavar="KIND")
    option("--mlx-server-port", "mlx_server_port",
           "server suite: the 127.0.0.1 port of the server started here (default 0: a free one)",
           default=None, metavar="PORT")
    option("--mlx-server-timeout", "mlx_server_timeout",
           "server suite: seconds the server may take to become ready, and to answer one request "
           "(default 300)", default=None, metavar="SECONDS")
    option("--mlx-server-concurrency", "mlx_server_concurrency",
           "server suite: numbers of concurrent clients of the concurrency sweep (default 1,2,4)",
           default=None, metavar="N,...")
    option("--mlx-server-args", "mlx_server_args",
           "server suite: more arguments for mlx_vlm.server, e.g. '--max-num-seqs 4'",
           default=None, metavar="ARGS")

    option("--mlx-video", "mlx_video",
           "video suite: your own clip, re-encoded at --mlx-video-size (default: a synthetic 10 s clip)",
           default=None, metavar="PATH")
    option("--mlx-video-configs", "mlx_video_configs",
           "video suite: frames@fps per case, e.g. 4@1,16@2 (default: ten from 2@0.5 to 64@8; "
           "--quick: 4@1,8@2,16@2)", default=None, metavar="FRAMES@FPS,...")
    option("--mlx-video-size", "mlx_video_size", "video suite: frame size of the clip (default 640x360)",
           default=None, metavar="WxH")
    option("--mlx-batch-sizes", "mlx_batch_sizes",
           "batch suite: requests per mlx_vlm.batch_generate call (default 1,2,4,8)", default=None,
           metavar="N,...")

    option("--mlx-cache-engine", "mlx_cache_engine",
           "prefix-cache engines for the cache suite: apc, prompt-cache, vllm-mlx, your own "
           "(hook), or all available (default); repeatable", ini_type="linelist",
           action="append", default=None, metavar="NAME")
    parser.addini("mlx_cache_expect",
                  "override expected cache outcomes: lines 'ENGINE: STEP = HIT|PARTIAL|MISS'",
                  type="linelist")

    gate_option("--mlx-baseline-dir", "mlx_baseline_dir",
                "where baselines live, one folder per chip (default: baselines/ in the rootdir)",
                default=None, metavar="DIR")
    gate.addoption(
        "--mlx-update-baselines", dest="mlx_update_baselines", nargs="?", const="all",
        default=None, choices=("all", "new", "add"), metavar="all|new|add",
        help="write the results of passing tests as baselines once the whole session passed: "
        "'all' replaces, 'new' writes only cases that have none, 'add' appends this session "
        "(repeat it to give the gate the session-to-session drift of this machine)",
    )
    gate_option("--mlx-missing-baseline", "mlx_missing_baseline",
                "a case without a baseline: warn (default), fail or skip",
                default=None, choices=("warn", "fail", "skip"))
    gate_option("--mlx-tolerance", "mlx_tolerance",
                "tolerance per metric in percent, e.g. ttft_s=20 or peak_memory=off (repeatable); "
                "defaults: end_to_end_tps=10 generation_tps=10 ttft_s=15 peak_memory=5",
                ini_type="linelist", action="append", default=None, metavar="METRIC=PCT")
    gate_option("--mlx-alpha", "mlx_alpha",
                "significance level of the gate (default 0.05): each metric's Mann-Whitney test "
                "is judged at P, and the baseline's drift allowance at P / (measured tests x "
                "gated metrics), so a session of unchanged code fails on drift with chance <= P",
                default=None, metavar="P")
    gate_option("--mlx-baseline-min-sessions", "mlx_baseline_min_sessions",
                "a stored baseline fails tests only when it holds at least N sessions recorded at "
                "two or more different times (an hour apart) or on two or more machines; a weaker "
                "one is compared and reported, not gated (default 3)", default=None, metavar="N")
    gate_option("--mlx-strict-baselines", "mlx_strict_baselines",
                "gate with any stored baseline, even one session, one burst or a published reference "
                "figure", ini_type="bool", action="store_true", default=None)
    gate.addoption("--mlx-no-confirm", dest="mlx_no_confirm", action="store_true", default=False,
                   help="fail on the first measurement instead of measuring a regressed case again")
    gate_option("--mlx-stale-threshold", "mlx_stale_threshold",
                "warn that a baseline is stale when a metric improved by more than PCT percent",
                default=None, metavar="PCT")
    ab = parser.getgroup("mlxvlm-ab", "pytest-mlxvlm paired A/B gating (base and head side by side)")

    def ab_option(flag: str, ini: str, help: str, **kw: Any) -> None:
        mirrored(ab, flag, ini, help, **kw)

    ab_option("--mlx-ab-base", "mlx_ab_base",
              "gate against this git revision of the repository under test (e.g. origin/main), "
              "measured side by side with the working tree in two worker processes, pair by "
              "pair (see --mlx-ab-order); no stored baseline needed", default=None, metavar="REV")
    ab_option("--mlx-ab-python", "mlx_ab_python",
              "the base side's Python interpreter or virtual environment (other mlx / mlx-vlm "
              "versions); alone: the same code under another environment", default=None,
              metavar="PATH")
    ab_option("--mlx-ab-pairs", "mlx_ab_pairs",
              "pairs of rounds per case: at least MIN, at most MAX, stopping once the verdict is "
              "clear (default 20:40)", default=None, metavar="MIN:MAX")
    ab_option("--mlx-ab-budget", "mlx_ab_budget",
              "seconds one case may measure before it decides on the pairs it has (default 480)",
              default=None, metavar="SECONDS")
    ab_option("--mlx-ab-estimator", "mlx_ab_estimator",
              "the change of a metric: fast (the fast end of each side, q90 of tok/s, paired "
              "bootstrap; default: a busy host only slows rounds) or median (Hodges-Lehmann, "
              "Wilcoxon signed-rank)", default=None, choices=("fast", "median"))
    ab_option("--mlx-ab-order", "mlx_ab_order",
              "how the sides take their rounds: turns (default: ABBA, one at a time) or duet "
              "(both generate at once: on a CUDA host 4-5x less decode noise per pair, but "
              "concurrent prefills of large images can favour one side's TTFT; see "
              "docs/benchmarks.md), or staggered (as duet, but the side asked second starts when the "
              "first has its first token: the prefills never collide)", default=None,
              choices=("turns", "duet", "staggered"))
    gate_option("--mlx-markdown", "mlx_markdown",
                "write a pull-request comment (Markdown) to PATH; also appended to "
                "$GITHUB_STEP_SUMMARY when set", default=None, metavar="PATH")


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
        if name in ("mlx_update_baselines", "mlx_no_confirm"):
            return None, None  # command line only
        try:
            raw = config.getini(name)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"ini {name}: {exc}") from None
        if raw in ("", [], None) or (name in ("mlx_quick", "mlx_isolate", "mlx_strict_baselines") and raw is False):
            return None, None
        return raw, f"ini {name}"
    return find


def settings_from_config(config: pytest.Config) -> Settings:
    """The session's settings; a bad value stops the run with one line that says what to write."""
    try:
        return resolve(lookup(config), base_dir=config.invocation_params.dir, rootdir=config.rootpath)
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-mlxvlm: {exc}") from None
