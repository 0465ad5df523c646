"""Settings: what to measure, resolved once from markers, options, ini values and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .compare import ToleranceError, merge_tolerances, parse_tolerances
from .paired import AB_TOLERANCES

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

_RESOLUTION = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")
MAX_SIDE = 16384


def parse_resolution(text: str) -> Resolution:
    """Parse ``WxH`` (or a bare side ``N`` for a square)."""
    match = _RESOLUTION.fullmatch(text)
    if match is None and text.strip().isdigit():
        width = height = int(text)
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
    isolate: bool = False  # measure in a worker process, so that a crash fails one case only
    adaptive: bool = False  # --mlx-rounds auto: rounds until the medians are precise enough
    precision: float = 0.03  # target half-width of the median's 95% interval (adaptive rounds)
    max_rounds: int = 30
    case_budget_s: float = 120.0

    def describe(self) -> dict[str, Any]:
        """The settings that define what a measurement means (for reports and baselines)."""
        return {
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "rounds": "auto" if self.adaptive else self.rounds,
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


@dataclass(frozen=True)
class Outputs:
    """Where results go, and how this machine is named."""

    json_path: Path | None = None
    markdown_path: Path | None = None
    history_path: Path | None = None
    chip: str | None = None
    bandwidth: float | None = None  # GB/s; overrides the published figure of the chip


@dataclass(frozen=True)
class ABPlan:
    """What the A/B mode compares and how long it may measure a case."""

    base_rev: str | None = None
    base_python: str | None = None
    min_pairs: int = 20
    max_pairs: int = 40
    budget_s: float = 480.0  # per case, warmup included
    timeout_s: float = 600.0  # one generation; a worker silent this long is stopped
    estimator: str = "fast"  # "fast" (q90 of tok/s, bootstrap) or "median" (Wilcoxon, HL)

    @property
    def active(self) -> bool:
        return bool(self.base_rev or self.base_python)


@dataclass(frozen=True)
class ServerPlan:
    """The server suite: which server, how long it may take, how many clients at once."""

    url: str | None = None  # a server the user runs: nothing is started or stopped
    port: int = 0  # for a server started here; 0: a free port
    timeout_s: float = 300.0  # to become ready, and for one request
    concurrency: tuple[int, ...] = (1, 2, 4)
    args: tuple[str, ...] = ()  # more arguments for mlx_vlm.server


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a session, grouped by what they govern."""

    workload: Workload = field(default_factory=Workload)
    gate: GatePolicy = field(default_factory=GatePolicy)
    outputs: Outputs = field(default_factory=Outputs)
    ab: ABPlan = field(default_factory=lambda: ABPlan())
    server: ServerPlan = field(default_factory=ServerPlan)

    def for_marker(self, **overrides: Any) -> Settings:
        """These settings with a ``mlx_benchmark`` marker's keywords applied."""
        known = {"rounds", "max_tokens", "warmup", "resolutions", "prompt", "tolerance"}
        unknown = set(overrides) - known
        if unknown:
            raise SettingsError(
                f"mlx_benchmark marker: unknown keyword(s) {sorted(unknown)}; "
                f"use {sorted(known)}"
            )
        work: dict[str, Any] = {}
        if "rounds" in overrides:
            work["rounds"] = positive_int("rounds", overrides["rounds"])
        if "max_tokens" in overrides:
            work["max_tokens"] = positive_int("max_tokens", overrides["max_tokens"])
        if "warmup" in overrides:
            work["warmup"] = positive_int("warmup", overrides["warmup"], minimum=0)
        if "resolutions" in overrides:
            work["resolutions"] = parse_resolutions(overrides["resolutions"])
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
    else:
        entries = [str(v) for v in value]
    try:
        layer = parse_tolerances(entries)
    except ToleranceError as exc:
        raise SettingsError(str(exc)) from None
    merged: dict[str, float | None] = {**base, **layer}
    return {k: v for k, v in merged.items() if v is not None}


SUITES = ("images", "cache")
OPT_IN_SUITES = ("server",)  # named only: not part of "all"


def parse_suites(value: str, models_given: bool, where: str = "--mlx-suite") -> tuple[str, ...]:
    """``auto`` (images when --mlx-model is given), ``off``, ``all``, or names: ``images,cache``."""
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
            f"{where}: unknown suite {unknown[0]!r}; use auto, off, all, or images, cache, server"
        )
    return tuple(dict.fromkeys(names))


# A lookup answers a setting's name (the ini name, e.g. "mlx_rounds") with its value and
# where it came from ("--mlx-rounds", "ini mlx_rounds"), or (None, None) when it is not set.
Lookup = Callable[[str], "tuple[Any, str | None]"]

FLAGS = {
    "mlx_model": "--mlx-model", "mlx_quick": "--quick", "mlx_resolutions": "--mlx-resolutions",
    "mlx_max_tokens": "--mlx-max-tokens", "mlx_rounds": "--mlx-rounds",
    "mlx_warmup": "--mlx-warmup", "mlx_prompt": "--mlx-prompt", "mlx_image": "--mlx-image",
    "mlx_json": "--mlx-json", "mlx_chip": "--mlx-chip", "mlx_suite": "--mlx-suite",
    "mlx_baseline_dir": "--mlx-baseline-dir", "mlx_update_baselines": "--mlx-update-baselines",
    "mlx_missing_baseline": "--mlx-missing-baseline", "mlx_tolerance": "--mlx-tolerance",
    "mlx_alpha": "--mlx-alpha", "mlx_no_confirm": "--mlx-no-confirm",
    "mlx_stale_threshold": "--mlx-stale-threshold", "mlx_markdown": "--mlx-markdown",
    "mlx_history": "--mlx-history", "mlx_bandwidth": "--mlx-bandwidth",
    "mlx_isolate": "--mlx-isolate", "mlx_baseline_min_sessions": "--mlx-baseline-min-sessions",
    "mlx_strict_baselines": "--mlx-strict-baselines", "mlx_precision": "--mlx-precision",
    "mlx_max_rounds": "--mlx-max-rounds", "mlx_case_budget": "--mlx-case-budget", "mlx_ab_base": "--mlx-ab-base", "mlx_ab_python": "--mlx-ab-python",
    "mlx_ab_pairs": "--mlx-ab-pairs", "mlx_ab_budget": "--mlx-ab-budget",
    "mlx_worker_timeout": "--mlx-worker-timeout", "mlx_ab_estimator": "--mlx-ab-estimator",
    "mlx_server_url": "--mlx-server-url", "mlx_server_port": "--mlx-server-port",
    "mlx_server_timeout": "--mlx-server-timeout", "mlx_server_concurrency": "--mlx-server-concurrency",
    "mlx_server_args": "--mlx-server-args",
}


def mapping_lookup(values: dict[str, Any], source: str = "command line") -> Lookup:
    """A lookup over a plain dict of ini names (for tests and scripts)."""
    def lookup(name: str) -> tuple[Any, str | None]:
        value = values.get(name)
        if value is None or value == "" or value == []:
            return None, None
        return value, FLAGS.get(name, name) if source == "command line" else f"ini {name}"
    return lookup


def resolve(lookup: Lookup, *, base_dir: Path, rootdir: Path | None = None) -> Settings:
    """Resolve every setting through ``lookup`` (option over ini), then the defaults.

    Errors name where the bad value came from: the flag, or the ini key.
    """
    def get(name: str, default: Any = None) -> tuple[Any, str]:
        value, where = lookup(name)
        return (default, FLAGS.get(name, name)) if value is None else (value, where or name)

    def path_of(name: str) -> Path | None:
        value, _ = get(name)
        return base_dir / str(value) if value else None

    models, where_models = lookup("mlx_model")
    chosen_models = tuple(dict.fromkeys(models or [DEFAULT_MODEL]))
    quick, _ = get("mlx_quick", False)
    is_quick = _boolean("mlx_quick", quick)
    res_text, where = lookup("mlx_resolutions")
    if res_text is not None:
        try:
            sweep = parse_resolutions(res_text)
        except SettingsError as exc:
            raise SettingsError(_from_ini(where, exc)) from None
    else:
        sweep = QUICK_SWEEP if is_quick else FULL_SWEEP
    image, where = lookup("mlx_image")
    image_path = None
    if image:
        image_path = Path(image)
        if not image_path.is_absolute():
            image_path = base_dir / image_path
        if not image_path.is_file():
            raise SettingsError(f"{where} {image!r}: no such file")
    suite, where = get("mlx_suite", "auto")
    run_suite = parse_suites(suite, bool(models) and where_models == FLAGS["mlx_model"], where)
    update, _ = lookup("mlx_update_baselines")
    if update not in (None, "all", "new", "add"):
        raise SettingsError(f"--mlx-update-baselines takes all, new or add, got {update!r}")
    missing, where = get("mlx_missing_baseline", "warn")
    if missing not in ("warn", "fail", "skip"):
        raise SettingsError(f"{where} must be warn, fail or skip, got {missing!r}")
    tolerances, where = get("mlx_tolerance", [])
    try:
        user_tolerances = parse_tolerances(tolerances)
        tolerance_map = merge_tolerances(user_tolerances)
    except ToleranceError as exc:
        raise SettingsError(_from_ini(where, exc)) from None
    stale, where_stale = lookup("mlx_stale_threshold")
    bandwidth, where_bw = lookup("mlx_bandwidth")
    root = rootdir or base_dir
    baseline_dir, _ = get("mlx_baseline_dir", "baselines")
    bdir = Path(baseline_dir)
    no_confirm, _ = get("mlx_no_confirm", False)
    chip, _ = lookup("mlx_chip")
    rounds_text, _ = get("mlx_rounds", DEFAULT_ROUNDS)
    adaptive = str(rounds_text).strip().lower() == "auto"
    workload = Workload(
        models=chosen_models,
        resolutions=sweep,
        quick=is_quick,
        max_tokens=positive_int(*_named("mlx_max_tokens", get, DEFAULT_MAX_TOKENS)),
        rounds=DEFAULT_ROUNDS if adaptive else positive_int(*_named("mlx_rounds", get, DEFAULT_ROUNDS)),
        adaptive=adaptive,
        precision=_fraction(*_named("mlx_precision", get, 3), upper=100) / 100,
        max_rounds=positive_int(*_named("mlx_max_rounds", get, 30), minimum=DEFAULT_ROUNDS, maximum=10_000),
        case_budget_s=_fraction(*_named("mlx_case_budget", get, 120), upper=86400),
        warmup=positive_int(*_named("mlx_warmup", get, DEFAULT_WARMUP), minimum=0),
        prompt=get("mlx_prompt", DEFAULT_PROMPT)[0],
        image=image_path,
        suites=run_suite,
        isolate=_boolean("mlx_isolate", get("mlx_isolate", False)[0]),
    )
    gate = GatePolicy(
        baseline_dir=bdir if bdir.is_absolute() else root / bdir,
        update=update,
        missing=missing,
        tolerances=tolerance_map,
        alpha=_fraction(*_named("mlx_alpha", get, 0.05), upper=0.5),
        confirm=not no_confirm,
        stale=None if stale is None else _fraction(where_stale or "", stale, 1000) / 100,
        ab_tolerances={k: v for k, v in {**AB_TOLERANCES, **user_tolerances}.items() if v is not None},
        min_sessions=positive_int(*_named("mlx_baseline_min_sessions", get, 3), maximum=1000),
        strict=_boolean("mlx_strict_baselines", get("mlx_strict_baselines", False)[0]),
    )
    outputs = Outputs(
        json_path=path_of("mlx_json"),
        markdown_path=path_of("mlx_markdown"),
        history_path=path_of("mlx_history"),
        chip=chip or None,
        bandwidth=None if bandwidth is None else _fraction(where_bw or "", bandwidth, 1e6),
    )
    return Settings(workload=workload, gate=gate, outputs=outputs, ab=_ab_plan(get, lookup),
                    server=_server_plan(get, lookup))


def _server_plan(get: Callable[..., tuple[Any, str]], lookup: Lookup) -> ServerPlan:
    import shlex

    url, where_url = lookup("mlx_server_url")
    if url:
        url = str(url).strip()
        if not re.match(r"https?://[^/\s:]+(:\d+)?(/\S*)?$", url):
            raise SettingsError(f"{where_url} {url!r}: write http://HOST:PORT")
    levels, where = get("mlx_server_concurrency", "1,2,4")
    parts = [p for p in re.split(r"[,\s]+", str(levels)) if p]
    if not parts:
        raise SettingsError(f"{where}: give client counts, e.g. 1,2,4")
    concurrency = tuple(dict.fromkeys(positive_int(where, p, maximum=1024) for p in parts))
    args, where_args = get("mlx_server_args", "")
    try:
        extra = tuple(shlex.split(str(args)))
    except ValueError as exc:
        raise SettingsError(f"{where_args}: {exc}") from None
    return ServerPlan(
        url=url or None,
        port=positive_int(*_named("mlx_server_port", get, 0), minimum=0, maximum=65535),
        timeout_s=_fraction(*_named("mlx_server_timeout", get, ServerPlan.timeout_s), upper=86400),
        concurrency=concurrency,
        args=extra,
    )


def _ab_plan(get: Callable[..., tuple[Any, str]], lookup: Lookup) -> ABPlan:
    base_rev, _ = lookup("mlx_ab_base")
    base_python, _ = lookup("mlx_ab_python")
    estimator, where_estimator = get("mlx_ab_estimator", ABPlan.estimator)
    if estimator not in ("fast", "median"):
        raise SettingsError(f"{where_estimator} must be fast or median, got {estimator!r}")
    pairs, where = get("mlx_ab_pairs", f"{ABPlan.min_pairs}:{ABPlan.max_pairs}")
    low, sep, high = str(pairs).partition(":")
    low_n = positive_int(where, low, minimum=2, maximum=10_000)
    high_n = positive_int(where, high if sep else low, minimum=low_n, maximum=10_000)
    return ABPlan(
        base_rev=str(base_rev) if base_rev else None,
        base_python=str(base_python) if base_python else None,
        min_pairs=low_n,
        max_pairs=high_n,
        budget_s=_fraction(*_named("mlx_ab_budget", get, ABPlan.budget_s), upper=86400),
        timeout_s=_fraction(*_named("mlx_worker_timeout", get, ABPlan.timeout_s), upper=86400),
        estimator=estimator,
    )


def _from_ini(where: str | None, exc: Exception) -> str:
    """An error message that names the ini key when the value came from the ini file."""
    return f"{where}: {exc}" if where and where.startswith("ini ") else str(exc)


def _named(name: str, get: Callable[..., tuple[Any, str]], default: Any) -> tuple[str, Any]:
    value, where = get(name, default)
    return where, value


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"ini {name} must be true or false, got {value!r}")


def _fraction(name: str, value: Any, upper: float) -> float:
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not 0 < number <= upper:
        raise SettingsError(f"{name} must be above 0 and at most {upper}, got {number}")
    return number
