"""Settings: what to measure and how to judge it, grouped by what they govern; the parsers of
single values. ``resolve`` builds them from options and ini values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .tolerances import AB_TOLERANCES, ToleranceError, merge_tolerances, parse_tolerances

DEFAULT_MODEL = "synthetic:tiny"
DEFAULT_PROMPT = "Describe this image in detail."
DEFAULT_MAX_TOKENS = 64
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 1


class SettingsError(ValueError):
    """A setting with a value that cannot be used; the message says what to do."""


@dataclass(frozen=True, order=True)
class Resolution:
    """An image size in pixels."""

    width: int
    height: int

    @property
    def id(self) -> str:
        return f"{self.width}x{self.height}"

    def __str__(self) -> str:
        return self.id


def _squares(*sides: int) -> tuple[Resolution, ...]:
    return tuple(Resolution(side, side) for side in sides)


FULL_SWEEP: tuple[Resolution, ...] = _squares(224, 336, 448, 512, 672, 768, 896, 1024) + (
    Resolution(1280, 720),
    Resolution(1920, 1080),
)
QUICK_SWEEP: tuple[Resolution, ...] = _squares(224, 448, 768, 1024)

_RESOLUTION = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", re.ASCII)
_SIDE = re.compile(r"\s*(\d+)\s*²?\s*", re.ASCII)  # a bare side, or 224² as the docs write it: a square
MAX_SIDE = 16384


def parse_resolution(text: str) -> Resolution:
    """Parse ``WxH`` (or a bare side ``N``, or ``N²``, for a square)."""
    match, side = _RESOLUTION.fullmatch(text), _SIDE.fullmatch(text)
    if side is not None:
        width = height = int(side[1])
    elif match is None:
        raise SettingsError(
            f"bad resolution {text!r}: write WIDTHxHEIGHT, e.g. 448x448 or 1920x1080"
        )
    else:
        width, height = int(match[1]), int(match[2])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise SettingsError(
            f"bad resolution {text!r}: width and height must be between 1 and {MAX_SIDE}"
        )
    return Resolution(width, height)


def parse_resolutions(value: str | list[str] | tuple[Any, ...]) -> tuple[Resolution, ...]:
    """Parse a comma- or space-separated list of resolutions, keeping order, no repeats."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value) if p]
    else:
        parts = []
        for item in value:
            if isinstance(item, Resolution):
                parts.append(item.id)
            elif isinstance(item, tuple) and len(item) == 2:
                parts.append(f"{item[0]}x{item[1]}")
            else:
                parts.extend(p for p in re.split(r"[,\s]+", str(item)) if p)
    if not parts:
        raise SettingsError("no resolution given: write e.g. --mlx-resolutions 448x448,1024x1024")
    return tuple(dict.fromkeys(parse_resolution(p) for p in parts))


MAX_COUNT = 1_000_000  # rounds, tokens, warmups: beyond this a value is a typo


def positive_int(name: str, value: Any, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An integer setting between ``minimum`` and ``maximum``."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


AUTO_ROUNDS = (DEFAULT_ROUNDS, 30)  # --mlx-rounds auto: MIN:MAX
MAX_ROUNDS = 10_000


def count_range(where: str, value: Any, *, minimum: int = 1, maximum: int = MAX_COUNT,
                auto: tuple[int, int] | None = None) -> tuple[int, int]:
    """``N`` -> (N, N); ``MIN:MAX`` -> (MIN, MAX); ``auto`` -> ``auto`` where one is given.

    The one syntax of a count that may stop early: rounds (``--mlx-rounds 5:30``) and A/B
    pairs (``--mlx-ab-pairs 20:40``); their time limit is ``--mlx-case-budget``."""
    text = str(value).strip().lower()
    if auto is not None and text == "auto":
        return auto
    low, sep, high = text.partition(":")
    low_n = positive_int(where, low, minimum=minimum, maximum=maximum)
    return low_n, positive_int(where, high, minimum=low_n, maximum=maximum) if sep else low_n


@dataclass(frozen=True)
class Workload:
    """What is measured: models, sizes, prompt, output length and how often."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    resolutions: tuple[Resolution, ...] = QUICK_SWEEP
    quick: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    rounds: int = DEFAULT_ROUNDS
    warmup: int = DEFAULT_WARMUP
    prompt: str = DEFAULT_PROMPT
    image: Path | None = None
    suites: tuple[str, ...] = ()  # built-in suites to collect: "images", "cache"
    suite_auto: bool = False  # --mlx-suite auto chose them: dropped when the user has measured tests
    isolate: bool = False  # measure in a worker process, so that a crash fails one case only
    adaptive: bool = False  # --mlx-rounds MIN:MAX: rounds until the medians are precise enough
    precision: float = 0.03  # target half-width of the median's 95% interval (adaptive rounds)
    max_rounds: int = 30
    case_budget_s: float = 120.0

    @property
    def rounds_text(self) -> str:
        """The rounds as ``--mlx-rounds`` takes them: ``5``, or ``5:30`` when adaptive."""
        return f"{self.rounds}:{self.max_rounds}" if self.adaptive else str(self.rounds)

    def describe(self) -> dict[str, Any]:
        """The settings that define what a measurement means (for reports and baselines)."""
        return {
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "rounds": self.rounds_text if self.adaptive else self.rounds,
            "warmup": self.warmup,
            "image": str(self.image) if self.image else "synthetic",
        }


@dataclass(frozen=True)
class GatePolicy:
    """How results are judged: baselines, tolerances, significance, confirmation."""

    baseline_dir: Path = Path("baselines")
    update: str | None = None  # "all", "new" or "add": write baselines from passing tests
    missing: str = "warn"  # missing baseline: "warn", "fail" or "skip"
    tolerances: dict[str, float] = field(default_factory=lambda: merge_tolerances())
    alpha: float = 0.05
    confirm: bool = True
    stale: float | None = None  # report an improvement beyond this fraction as a stale baseline
    ab_tolerances: dict[str, float] = field(default_factory=lambda: dict(AB_TOLERANCES))
    min_sessions: int = 3  # a stored baseline gates only with this many sessions at different times
    strict: bool = False  # gate with any baseline (one session, one burst, a reference figure)
    work: str = "gate"  # the work profile: "off", "report" (compared, never fails) or "gate"
    outputs: str = "report"  # generated tokens that differ: "report" or "gate" (fail the test)


@dataclass(frozen=True)
class Outputs:
    """Where results go, and how this machine is named."""

    json_path: Path | None = None
    markdown_path: Path | None = None
    history_path: Path | None = None
    history_url: str | None = None  # --mlx-history sqlite:///... or postgresql://... (store.py)
    bmf_path: Path | None = None  # --mlx-bmf: Bencher Metric Format
    github_benchmark_dir: Path | None = None  # --mlx-github-benchmark: github-action-benchmark files
    chip: str | None = None
    bandwidth: float | None = None  # GB/s; overrides the published figure of the chip
    progress_s: float | None = 10.0  # without -v: a progress line at most this often; None: none


AB_ORDERS = ("turns", "duet", "staggered", "barrier")
AB_ESTIMATORS = ("fast", "median")  # --mlx-ab-estimator (docs/ab.md; the default is ABPlan.estimator)


@dataclass(frozen=True)
class ABPlan:
    """What the A/B mode compares and how long it may measure a case."""

    base_rev: str | None = None
    base_python: str | None = None
    min_pairs: int = 20
    max_pairs: int = 40
    budget_s: float = 480.0  # per case, warmup included
    timeout_s: float = 600.0  # one generation; a worker silent this long is stopped
    estimator: str = "median"  # "median" (Wilcoxon, HL) or "fast" (q90 of tok/s, bootstrap)
    order: str = "barrier"  # "barrier" (prefills in turn, each alone; both decodes released
    # together), "turns" (ABBA, one at a time), "duet" (both at once) or "staggered" (at once,
    # the second asked when the first has its first token: prefills never collide)
    inconclusive: str = "pass"  # an inconclusive case: "pass" (reported) or "fail"

    @property
    def active(self) -> bool:
        return bool(self.base_rev or self.base_python)


# -- serving workloads (parsed in serving.py) ------------------------------------------------------

@dataclass(frozen=True)
class Turn:
    """One request of a workload: its prompt, images (files or synthetic sizes) and length."""

    text: str
    images: tuple[str | Resolution, ...] = ()  # a path or URL, or a size for a synthetic image
    max_tokens: int | None = None  # None: --mlx-max-tokens

    def describe_images(self) -> str:
        return "+".join(i.id if isinstance(i, Resolution) else Path(str(i)).name for i in self.images) or "text"


@dataclass(frozen=True)
class Conversation:
    """A single request, or a session of turns sent in order, each with the history before it
    (the first turn's image sent again in every later request)."""

    turns: tuple[Turn, ...]
    session_id: str = ""

    @property
    def multi_turn(self) -> bool:
        return len(self.turns) > 1


@dataclass(frozen=True)
class WorkloadFile:
    """A workload: its conversations in file order, and where it came from."""

    name: str  # the case id: the file's stem or the built-in name
    source: str  # the path, or "built-in"
    conversations: tuple[Conversation, ...] = field(default_factory=tuple)

    @property
    def requests(self) -> int:
        return sum(len(c.turns) for c in self.conversations)


@dataclass(frozen=True)
class ServerPlan:
    """The server suite: which server, how long it may take, how many clients at once."""

    url: str | None = None  # a server the user runs: nothing is started or stopped
    port: int = 0  # for a server started here; 0: a free port
    timeout_s: float = 300.0  # to become ready; a request's deadlines (suites/server/deadlines.py Deadlines)
    concurrency: tuple[int, ...] = (1, 2, 4)
    args: tuple[str, ...] = ()  # more arguments for mlx_vlm.server
    kind: str = "mlx_vlm"  # the server started here: one of SERVER_KINDS
    # what marks a token in the stream: "content" (a chunk with text), "chunks" (every chunk but
    # the role's and the finish's), or None: by the server (chunks for vllm-mlx, else content)
    token_events: str | None = None
    # the serving benchmarks (serving.py parses them; docs/serving.md)
    concurrency_mode: str = "continuous"  # or "synchronized-rounds"
    requests: int | None = None  # per concurrency/rate case; None: rounds x clients (32 a rate)
    duration_s: float | None = None  # instead of a count: measure each such case this long
    rates: tuple[float, ...] = ()  # requests per second of the open-loop cases
    sweep_points: int = 0  # --mlx-server-rates sweep[:N]: rates at fractions of the capacity
    arrivals: str = "poisson"  # or "constant"
    slo: dict[str, float] = field(default_factory=dict)  # seconds per objective: ttft, itl, tpot, e2e
    workloads: tuple[WorkloadFile, ...] = ()  # --mlx-server-workload: files or built-in names
    soak_requests: int = 0  # --mlx-server-soak N: a memory soak of N requests (0: none)
    soak_duration_s: float | None = None  # --mlx-server-soak Ns: of this many seconds
    leak_mb: float = 8.0  # a soak fails when memory grows by more per 100 requests
    records_dir: Path | None = None  # per-request JSONL and a CSV per case

    @property
    def open_loop(self) -> bool:
        return bool(self.rates or self.sweep_points)


SERVER_KINDS = ("mlx_vlm", "vllm-mlx")  # --mlx-server: python -m mlx_vlm.server, or vllm-mlx serve
SERVER_NAMES = {"mlx_vlm": "mlx_vlm.server", "vllm-mlx": "vllm-mlx"}  # each kind as reports name it
TOKEN_EVENTS = ("content", "chunks")  # --mlx-server-token-events


# Video sweeps as vllm-mlx's video benchmark: (frames, fps) on a 10 s clip, 96+ frames left out
FULL_VIDEO: tuple[tuple[int, float], ...] = ((2, 0.5), (4, 1.0), (6, 1.0), (8, 2.0), (12, 2.0), (16, 2.0),
                                             (24, 4.0), (32, 4.0), (48, 8.0), (64, 8.0))
QUICK_VIDEO: tuple[tuple[int, float], ...] = ((4, 1.0), (8, 2.0), (16, 2.0))
MAX_FRAMES = 4096


def parse_video_configs(value: Any, where: str = "--mlx-video-configs") -> tuple[tuple[int, float], ...]:
    """``FRAMES@FPS,...`` (e.g. ``4@1,16@2``; ``16f@2fps`` too), keeping order, no repeats."""
    parts = [p for p in re.split(r"[,\s]+", str(value)) if p]
    if not parts:
        raise SettingsError(f"{where}: no clip configuration given: write FRAMES@FPS, e.g. 4@1,16@2")
    out = []
    for part in parts:
        match = re.fullmatch(r"(\d+)f?@([0-9.eE+-]+)(?:fps)?", part.strip())
        if match is None:
            raise SettingsError(f"{where}: bad clip configuration {part!r}: write FRAMES@FPS, e.g. 16@2")
        frames = positive_int(where, match[1], maximum=MAX_FRAMES)
        try:
            fps = float(match[2])
        except ValueError:
            fps = float("nan")
        if not 0 < fps <= 1000:
            raise SettingsError(f"{where}: bad clip configuration {part!r}: fps must be above 0 "
                                f"and at most 1000, got {match[2]}")
        out.append((frames, fps))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class MediaPlan:
    """The video and batch suites: the clip, its sampling sweep, and the batch sizes."""

    video_configs: tuple[tuple[int, float], ...] = FULL_VIDEO  # (frames, fps) per case
    video: Path | None = None  # the user's own clip (resized to video_size); None: a synthetic one
    video_size: Resolution = Resolution(640, 360)  # frame size of the clip (vllm-mlx's 360p clip)
    video_seconds: float = 10.0  # length of the synthetic clip
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a session, grouped by what they govern."""

    workload: Workload = field(default_factory=Workload)
    gate: GatePolicy = field(default_factory=GatePolicy)
    outputs: Outputs = field(default_factory=Outputs)
    ab: ABPlan = field(default_factory=lambda: ABPlan())
    server: ServerPlan = field(default_factory=ServerPlan)
    media: MediaPlan = field(default_factory=MediaPlan)

    def for_marker(self, **overrides: Any) -> Settings:
        """These settings with a ``mlx_benchmark`` marker's keywords applied (None: the session's)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        known = {"rounds", "max_tokens", "warmup", "resolutions", "prompt", "tolerance"}
        unknown = set(overrides) - known
        if unknown:
            raise SettingsError(
                f"mlx_benchmark marker: unknown keyword(s) {sorted(unknown)}; "
                f"use {sorted(known)}"
            )
        work: dict[str, Any] = {}
        if "rounds" in overrides:  # N, or MIN:MAX as --mlx-rounds takes them
            low, high = count_range("rounds", overrides["rounds"],
                                    auto=(AUTO_ROUNDS[0], max(AUTO_ROUNDS[0], self.workload.max_rounds)))
            work.update(rounds=low, max_rounds=high, adaptive=high > low)
        if "max_tokens" in overrides:
            work["max_tokens"] = positive_int("max_tokens", overrides["max_tokens"])
        if "warmup" in overrides:
            work["warmup"] = positive_int("warmup", overrides["warmup"], minimum=0)
        if "resolutions" in overrides:
            value = overrides["resolutions"]
            if not isinstance(value, (str, list, tuple)):
                raise SettingsError(f"resolutions: give 'WxH' or a list of them, e.g. ['448x448'], not {value!r}")
            work["resolutions"] = parse_resolutions(value)
        if "prompt" in overrides:
            work["prompt"] = str(overrides["prompt"])
        gate = self.gate
        if "tolerance" in overrides:
            gate = replace(gate, tolerances=_merge_tolerance(gate.tolerances, overrides["tolerance"]),
                           ab_tolerances=_merge_tolerance(gate.ab_tolerances, overrides["tolerance"]))
        return replace(self, workload=replace(self.workload, **work), gate=gate)

    def describe(self) -> dict[str, Any]:
        """The settings as reports and histories record them."""
        w = self.workload
        return {
            "models": list(w.models),
            "resolutions": [r.id for r in w.resolutions],
            "quick": w.quick,
            **w.describe(),
        }


def _merge_tolerance(base: dict[str, float], value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        entries = [f"{k}={v}" for k, v in value.items()]
    elif isinstance(value, str):
        entries = [value]
    elif isinstance(value, (list, tuple)):
        entries = [str(v) for v in value]
    else:
        raise SettingsError(f"tolerance: give 'METRIC=PCT', a list of them or a dict, not {value!r}")
    try:
        layer = parse_tolerances(entries)
    except ToleranceError as exc:
        raise SettingsError(str(exc)) from None
    merged: dict[str, float | None] = {**base, **layer}
    return {k: v for k, v in merged.items() if v is not None}


SUITES = ("images", "cache")
OPT_IN_SUITES = ("server", "video", "batch")  # named only: not part of "all"


def parse_suites(value: str, models_given: bool, where: str = "--mlx-suite") -> tuple[str, ...]:
    """``auto`` (images when --mlx-model is given on the command line; the plugin drops it again
    where the session has measured tests of its own), ``off``, ``all``, or names: ``images,cache``."""
    names = [v.strip() for v in str(value).replace(" ", ",").split(",") if v.strip()] or ["auto"]
    if names == ["auto"]:
        return ("images",) if models_given else ()
    if names == ["off"]:
        return ()
    if names in (["all"], ["on"]):
        return SUITES
    unknown = [n for n in names if n not in SUITES + OPT_IN_SUITES]
    if unknown:
        raise SettingsError(
            f"{where}: unknown suite {unknown[0]!r}; use auto, off, all, or images, cache, server, "
            "video, batch"
        )
    return tuple(dict.fromkeys(names))
