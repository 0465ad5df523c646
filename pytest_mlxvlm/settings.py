"""Settings: what to measure, resolved once from markers, options, ini values and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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

    @property
    def pixels(self) -> int:
        return self.width * self.height

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


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer setting of at least ``minimum``."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {number}")
    return number


@dataclass(frozen=True)
class Settings:
    """The workload of a session: models, sizes, prompt and how often to measure."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    resolutions: tuple[Resolution, ...] = QUICK_SWEEP
    quick: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    rounds: int = DEFAULT_ROUNDS
    warmup: int = DEFAULT_WARMUP
    prompt: str = DEFAULT_PROMPT
    image: Path | None = None
    json_path: Path | None = None
    chip: str | None = None
    suites: tuple[str, ...] = ()  # built-in suites to collect: "images", "cache"
    baseline_dir: Path = Path("baselines")
    update: str | None = None  # "all", "new" or "add": write baselines from passing tests
    missing: str = "warn"  # missing baseline: "warn", "fail" or "skip"
    tolerances: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    confirm: bool = True
    stale: float | None = None  # report an improvement beyond this fraction as a stale baseline
    markdown_path: Path | None = None
    history_path: Path | None = None
    bandwidth: float | None = None  # GB/s; overrides the published figure of the chip

    def for_marker(self, **overrides: Any) -> Settings:
        """These settings with a ``mlx_benchmark`` marker's keywords applied."""
        known = {"rounds", "max_tokens", "warmup", "resolutions", "prompt", "tolerance"}
        unknown = set(overrides) - known
        if unknown:
            raise SettingsError(
                f"mlx_benchmark marker: unknown keyword(s) {sorted(unknown)}; "
                f"use {sorted(known)}"
            )
        changes: dict[str, Any] = {}
        if "rounds" in overrides:
            changes["rounds"] = positive_int("rounds", overrides["rounds"])
        if "max_tokens" in overrides:
            changes["max_tokens"] = positive_int("max_tokens", overrides["max_tokens"])
        if "warmup" in overrides:
            changes["warmup"] = positive_int("warmup", overrides["warmup"], minimum=0)
        if "resolutions" in overrides:
            changes["resolutions"] = parse_resolutions(overrides["resolutions"])
        if "prompt" in overrides:
            changes["prompt"] = str(overrides["prompt"])
        if "tolerance" in overrides:
            changes["tolerances"] = _merge_tolerance(self.tolerances, overrides["tolerance"])
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The settings as reports and histories record them."""
        return {
            "models": list(self.models),
            "resolutions": [r.id for r in self.resolutions],
            "quick": self.quick,
            **self.workload(),
        }

    def workload(self) -> dict[str, Any]:
        """The settings that define what a measurement means (for reports and baselines)."""
        return {
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "image": str(self.image) if self.image else "synthetic",
        }


def _merge_tolerance(base: dict[str, float], value: Any) -> dict[str, float]:
    from .compare import ToleranceError, parse_tolerances

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


def parse_suites(value: str, models_given: bool) -> tuple[str, ...]:
    """``auto`` (images when --mlx-model is given), ``off``, ``all``, or names: ``images,cache``."""
    names = [v.strip() for v in str(value).replace(" ", ",").split(",") if v.strip()] or ["auto"]
    if names == ["auto"]:
        return ("images",) if models_given else ()
    if names == ["off"]:
        return ()
    if names in (["all"], ["on"]):
        return SUITES
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SettingsError(
            f"--mlx-suite: unknown suite {unknown[0]!r}; use auto, off, all, or images, cache"
        )
    return tuple(dict.fromkeys(names))


def _given(value: Any, default: Any) -> Any:
    return default if value is None or value == "" else value


def resolve(
    *,
    models: list[str] | None,
    ini_models: list[str] | None,
    quick: bool | None,
    ini_quick: bool,
    resolutions: str | None,
    ini_resolutions: str | None,
    max_tokens: Any,
    rounds: Any,
    warmup: Any,
    prompt: str | None,
    image: str | None,
    json_path: str | None,
    chip: str | None,
    suite: str,
    base_dir: Path,
    baseline_dir: str | None = None,
    rootdir: Path | None = None,
    update: str | None = None,
    missing: str | None = None,
    tolerances: list[str] | None = None,
    alpha: Any = None,
    confirm: bool = True,
    stale: Any = None,
    markdown_path: str | None = None,
    history_path: str | None = None,
    bandwidth: Any = None,
) -> Settings:
    """Resolve command-line values (``None`` when absent) over ini values over defaults.

    Ini values arrive as the second argument of each pair, or inside the scalar arguments
    already merged by the caller (``option if not None else ini``).
    """
    chosen_models = tuple(dict.fromkeys(models or ini_models or [DEFAULT_MODEL]))
    is_quick = bool(quick) if quick is not None else ini_quick
    res_text = resolutions if resolutions is not None else ini_resolutions
    if res_text:
        sweep = parse_resolutions(res_text)
    else:
        sweep = QUICK_SWEEP if is_quick else FULL_SWEEP
    image_path = None
    if image:
        image_path = Path(image)
        if not image_path.is_absolute():
            image_path = base_dir / image_path
        if not image_path.is_file():
            raise SettingsError(f"--mlx-image {image!r}: no such file")
    run_suite = parse_suites(suite, bool(models))
    if update not in (None, "all", "new", "add"):
        raise SettingsError(f"--mlx-update-baselines takes all, new or add, got {update!r}")
    missing = missing or "warn"
    if missing not in ("warn", "fail", "skip"):
        raise SettingsError(f"--mlx-missing-baseline must be warn, fail or skip, got {missing!r}")
    from .compare import ToleranceError, merge_tolerances, parse_tolerances

    try:
        tolerance_map = merge_tolerances(parse_tolerances(tolerances or []))
    except ToleranceError as exc:
        raise SettingsError(str(exc)) from None
    alpha_value = _fraction("--mlx-alpha", _given(alpha, 0.05), upper=0.5)
    stale_value = None if stale in (None, "") else _fraction("--mlx-stale-threshold", stale, 1000) / 100
    root = rootdir or base_dir
    bdir = Path(baseline_dir or "baselines")
    return Settings(
        models=chosen_models,
        resolutions=sweep,
        quick=is_quick,
        max_tokens=positive_int("--mlx-max-tokens", _given(max_tokens, DEFAULT_MAX_TOKENS)),
        rounds=positive_int("--mlx-rounds", _given(rounds, DEFAULT_ROUNDS)),
        warmup=positive_int("--mlx-warmup", _given(warmup, DEFAULT_WARMUP), minimum=0),
        prompt=prompt or DEFAULT_PROMPT,
        image=image_path,
        json_path=base_dir / json_path if json_path else None,
        chip=chip or None,
        suites=run_suite,
        baseline_dir=bdir if bdir.is_absolute() else root / bdir,
        update=update,
        missing=missing,
        tolerances=tolerance_map,
        alpha=alpha_value,
        confirm=confirm,
        stale=stale_value,
        markdown_path=base_dir / markdown_path if markdown_path else None,
        history_path=base_dir / history_path if history_path else None,
        bandwidth=None if bandwidth in (None, "") else _fraction("--mlx-bandwidth", bandwidth, 1e6),
    )


def _fraction(name: str, value: Any, upper: float) -> float:
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not 0 < number <= upper:
        raise SettingsError(f"{name} must be above 0 and at most {upper}, got {number}")
    return number
