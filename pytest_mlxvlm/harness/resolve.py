"""Resolving the settings: one lookup (command line over ini file) for every setting, the
defaults, and errors that name the flag or the ini key the bad value came from."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable

from ..config.settings import (
    AB_ESTIMATORS,
    AB_ORDERS,
    AUTO_ROUNDS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    FULL_SWEEP,
    FULL_VIDEO,
    MAX_ROUNDS,
    QUICK_SWEEP,
    QUICK_VIDEO,
    SERVER_KINDS,
    TOKEN_EVENTS,
    ABPlan,
    GatePolicy,
    MediaPlan,
    Outputs,
    ServerPlan,
    Settings,
    SettingsError,
    Workload,
    count_range,
    parse_resolution,
    parse_resolutions,
    parse_suites,
    parse_video_configs,
    positive_int,
)
from ..config.tolerances import AB_TOLERANCES, ToleranceError, merge_tolerances, parse_tolerances
from ..results import WORK_MODES

# A lookup answers a setting's name (the ini name, e.g. "mlx_rounds") with its value and
# where it came from ("--mlx-rounds", "ini mlx_rounds"), or (None, None) when it is not set.
Lookup = Callable[[str], "tuple[Any, str | None]"]

def flag(name: str) -> str:
    """The command-line flag of a setting, from its ini name (``mlx_rounds`` -> ``--mlx-rounds``;
    ``options.py`` declares each flag with the ini name of the same spelling, ``--quick`` apart)."""
    return "--quick" if name == "mlx_quick" else "--" + name.replace("_", "-")


def mapping_lookup(values: dict[str, Any], source: str = "command line") -> Lookup:
    """A lookup over a plain dict of ini names (for tests and scripts)."""
    def lookup(name: str) -> tuple[Any, str | None]:
        value = values.get(name)
        if value is None or value == "" or value == []:
            return None, None
        return value, flag(name) if source == "command line" else f"ini {name}"
    return lookup


def resolve(lookup: Lookup, *, base_dir: Path, rootdir: Path | None = None) -> Settings:
    """Resolve every setting through ``lookup`` (option over ini), then the defaults.

    Errors name where the bad value came from: the flag, or the ini key.
    """
    def get(name: str, default: Any = None) -> tuple[Any, str]:
        value, where = lookup(name)
        return (default, flag(name)) if value is None else (value, where or name)

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
        if image_path.is_dir():
            raise SettingsError(f"{where} {image!r}: a folder, not an image file; give one image "
                                "(it is resized to each resolution)")
        if not image_path.is_file():
            raise SettingsError(f"{where} {image!r}: no such file")
    suite, where = get("mlx_suite", "auto")
    run_suite = parse_suites(suite, bool(models) and where_models == flag("mlx_model"), where)
    suite_auto = str(suite).strip().lower() in ("", "auto")
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
    min_rounds, max_rounds, adaptive = _rounds(get, lookup)
    budget, where_budget = lookup("mlx_case_budget")
    workload = Workload(
        models=chosen_models,
        resolutions=sweep,
        quick=is_quick,
        max_tokens=positive_int(*_named("mlx_max_tokens", get, DEFAULT_MAX_TOKENS)),
        rounds=min_rounds,
        adaptive=adaptive,
        precision=_fraction(*_named("mlx_precision", get, 3), upper=100) / 100,
        max_rounds=max_rounds,
        case_budget_s=_fraction(where_budget or "", budget, upper=86400) if budget is not None
        else Workload.case_budget_s,
        warmup=positive_int(*_named("mlx_warmup", get, DEFAULT_WARMUP), minimum=0),
        prompt=get("mlx_prompt", DEFAULT_PROMPT)[0],
        image=image_path,
        suites=run_suite,
        suite_auto=suite_auto,
        isolate=_boolean("mlx_isolate", get("mlx_isolate", False)[0]),
    )
    work, where = get("mlx_work", "gate")
    if work not in WORK_MODES:
        raise SettingsError(f"{where} must be off, report or gate, got {work!r}")
    outputs_mode, where = get("mlx_outputs", "report")
    if outputs_mode not in ("report", "gate"):
        raise SettingsError(f"{where} must be report or gate, got {outputs_mode!r}")
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
        work=work,
        outputs=outputs_mode,
    )
    history_url = _history_url(*_named("mlx_history", get, None))
    outputs = Outputs(
        json_path=path_of("mlx_json"),
        markdown_path=path_of("mlx_markdown"),
        history_path=None if history_url else path_of("mlx_history"),
        history_url=history_url,
        bmf_path=path_of("mlx_bmf"),
        github_benchmark_dir=path_of("mlx_github_benchmark"),
        chip=chip or None,
        bandwidth=None if bandwidth is None else _fraction(where_bw or "", bandwidth, 1e6),
        progress_s=_progress(*_named("mlx_progress", get, Outputs.progress_s)),
    )
    return Settings(workload=workload, gate=gate, outputs=outputs, ab=_ab_plan(get, lookup),
                    server=_server_plan(get, lookup, base_dir, workload.resolutions, workload.prompt),
                    media=_media_plan(get, lookup, base_dir, is_quick))


def _media_plan(get: Callable[..., tuple[Any, str]], lookup: Lookup, base_dir: Path, quick: bool) -> MediaPlan:
    """The video and batch suites' settings: clip, sampling sweep, frame size, batch sizes."""
    configs, where = lookup("mlx_video_configs")
    clip, where_clip = lookup("mlx_video")
    clip_path = None
    if clip:
        clip_path = Path(str(clip))
        clip_path = clip_path if clip_path.is_absolute() else base_dir / clip_path
        if not clip_path.is_file():
            raise SettingsError(f"{where_clip} {clip!r}: no such file")
    size, where_size = get("mlx_video_size", "640x360")
    try:
        frame_size = parse_resolution(str(size))
    except SettingsError as exc:
        raise SettingsError(f"{where_size}: {exc}") from None
    sizes, where_sizes = get("mlx_batch_sizes", "1,2,4,8")
    parts = [p for p in re.split(r"[,\s]+", str(sizes)) if p]
    if not parts:
        raise SettingsError(f"{where_sizes}: give batch sizes, e.g. 1,2,4,8")
    return MediaPlan(
        video_configs=parse_video_configs(configs, where or "--mlx-video-configs") if configs is not None
        else QUICK_VIDEO if quick else FULL_VIDEO,
        video=clip_path,
        video_size=frame_size,
        batch_sizes=tuple(dict.fromkeys(positive_int(where_sizes, p, maximum=256) for p in parts)),
    )


def _server_plan(get: Callable[..., tuple[Any, str]], lookup: Lookup, base_dir: Path,
                 resolutions: tuple[Any, ...], prompt: str) -> ServerPlan:
    url, where_url = lookup("mlx_server_url")
    if url:
        url = str(url).strip()
        port = re.match(r"https?://[^/\s:]+(?::(\d+))?(/\S*)?$", url)
        if not port or (port.group(1) is not None and not 0 < int(port.group(1)) < 65536):
            raise SettingsError(f"{where_url} {url!r}: write http://HOST:PORT (a port from 1 to 65535)")
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
    kind, where_kind = get("mlx_server", ServerPlan.kind)
    if str(kind) not in SERVER_KINDS:
        raise SettingsError(f"{where_kind} {kind!r}: choose {' or '.join(SERVER_KINDS)}")
    events, where_events = lookup("mlx_server_token_events")
    if events is not None and str(events) not in TOKEN_EVENTS:
        raise SettingsError(f"{where_events} {events!r}: choose {' or '.join(TOKEN_EVENTS)}")
    return ServerPlan(
        kind=str(kind),
        token_events=None if events is None else str(events),
        url=url or None,
        port=positive_int(*_named("mlx_server_port", get, 0), minimum=0, maximum=65535),
        timeout_s=_fraction(*_named("mlx_server_timeout", get, ServerPlan.timeout_s), upper=86400),
        concurrency=concurrency,
        args=extra,
        **_serving(get, lookup, base_dir, resolutions, prompt),
    )


def _serving(get: Callable[..., tuple[Any, str]], lookup: Lookup, base_dir: Path,
             resolutions: tuple[Any, ...], prompt: str) -> dict[str, Any]:
    """The serving benchmarks' settings (config/serving.py parses each one)."""
    from ..config import serving

    mode, where_mode = get("mlx_server_concurrency_mode", serving.CONTINUOUS)
    requests, where_requests = lookup("mlx_server_requests")
    duration, where_duration = lookup("mlx_server_duration")
    if requests is not None and duration is not None:
        raise SettingsError(f"{where_requests} and {where_duration}: give one of them, a count or a duration")
    rates, where_rates = lookup("mlx_server_rates")
    rate_list, sweep = serving.parse_rates(rates, where_rates or "") if rates is not None else ((), 0)
    arrivals, where_arrivals = get("mlx_server_arrivals", "poisson")
    if str(arrivals) not in serving.ARRIVALS:
        raise SettingsError(f"{where_arrivals} {arrivals!r}: choose {' or '.join(serving.ARRIVALS)}")
    slo, where_slo = lookup("mlx_server_slo")
    work, where_work = lookup("mlx_server_workload")
    soak, where_soak = lookup("mlx_server_soak")
    soak_requests, soak_s = serving.parse_soak(soak, where_soak or "") if soak is not None else (0, None)
    records, _ = lookup("mlx_server_records")
    return {
        "concurrency_mode": serving.parse_mode(mode, where_mode),
        "requests": None if requests is None else positive_int(where_requests or "", requests),
        "duration_s": None if duration is None else _fraction(where_duration or "", duration, 86400),
        "rates": rate_list,
        "sweep_points": sweep,
        "arrivals": str(arrivals),
        "slo": serving.parse_slo(slo, where_slo or "") if slo is not None else {},
        "workloads": serving.resolve_workloads(work, where_work or "", base_dir, resolutions, prompt)
        if work is not None else (),
        "soak_requests": soak_requests,
        "soak_duration_s": soak_s,
        "leak_mb": _fraction(*_named("mlx_server_leak_threshold", get, ServerPlan.leak_mb), upper=1e6),
        "records_dir": base_dir / str(records) if records else None,
    }


def _ab_plan(get: Callable[..., tuple[Any, str]], lookup: Lookup) -> ABPlan:
    base_rev, _ = lookup("mlx_ab_base")
    base_python, _ = lookup("mlx_ab_python")
    estimator, where_estimator = get("mlx_ab_estimator", ABPlan.estimator)
    if estimator not in AB_ESTIMATORS:
        raise SettingsError(f"{where_estimator} must be {' or '.join(AB_ESTIMATORS)}, got {estimator!r}")
    order, where_order = get("mlx_ab_order", ABPlan.order)
    if order not in AB_ORDERS:
        raise SettingsError(f"{where_order} must be one of {', '.join(AB_ORDERS)}, got {order!r}")
    inconclusive, where_inconclusive = get("mlx_ab_inconclusive", ABPlan.inconclusive)
    if inconclusive not in ("pass", "fail"):
        raise SettingsError(f"{where_inconclusive} must be pass or fail, got {inconclusive!r}")
    pairs, where = get("mlx_ab_pairs", f"{ABPlan.min_pairs}:{ABPlan.max_pairs}")
    low_n, high_n = count_range(where, pairs, minimum=2)
    budget, where_budget = lookup("mlx_ab_budget")  # the older spelling, for the A/B mode only
    if budget is None:
        budget, where_budget = lookup("mlx_case_budget")
    return ABPlan(
        base_rev=str(base_rev) if base_rev else None,
        base_python=str(base_python) if base_python else None,
        min_pairs=low_n,
        max_pairs=high_n,
        budget_s=ABPlan.budget_s if budget is None else _fraction(where_budget or "", budget, upper=86400),
        timeout_s=_fraction(*_named("mlx_worker_timeout", get, ABPlan.timeout_s), upper=86400),
        estimator=estimator,
        order=str(order),
        inconclusive=str(inconclusive),
    )


def _rounds(get: Callable[..., tuple[Any, str]], lookup: Lookup) -> tuple[int, int, bool]:
    """``--mlx-rounds``: N (fixed), MIN:MAX or auto (adaptive), as (MIN, MAX, adaptive); the
    older ``--mlx-max-rounds N`` sets the MAX of ``auto``."""
    old_max, where_max = lookup("mlx_max_rounds")
    top = AUTO_ROUNDS[1] if old_max is None else positive_int(
        where_max or "--mlx-max-rounds", old_max, minimum=AUTO_ROUNDS[0], maximum=MAX_ROUNDS)
    text, where = get("mlx_rounds", DEFAULT_ROUNDS)
    low, high = count_range(where, text, auto=(AUTO_ROUNDS[0], top))
    return low, (high if high > low else top), high > low


def _progress(where: str, value: Any) -> float | None:
    """``--mlx-progress``: seconds between progress lines without -v; 0 every case; off none."""
    if str(value).strip().lower() in ("off", "none", "no"):
        return None
    try:
        seconds = float(str(value).strip().rstrip("s"))
    except ValueError:
        raise SettingsError(f"{where} must be a number of seconds or off, got {value!r}") from None
    if not 0 <= seconds <= 86400:
        raise SettingsError(f"{where} must be between 0 and 86400 seconds, or off, got {value!r}")
    return seconds


def _history_url(where: str, value: Any) -> str | None:
    """A database URL given to --mlx-history (None for a file path); a bad one names the flag."""
    from ..reports.store import check_target, hide_password, is_url

    if not value or not is_url(str(value).strip()):
        return None
    url = str(value).strip()
    problem = check_target(url)
    if problem:
        raise SettingsError(f"{where} {hide_password(url)!r}: {problem}")
    return url


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
