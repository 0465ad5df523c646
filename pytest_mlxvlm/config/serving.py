"""The serving benchmarks' settings (no pytest, nothing heavy): how concurrency is scheduled,
request rates, service-level objectives, the memory soak, and workload files of requests and
multi-turn sessions (JSONL, in the shape aiperf's ``single_turn``/``multi_turn`` files use)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .settings import (Conversation, Resolution, SettingsError, Turn, WorkloadFile, parse_resolution,
                       positive_int)

CONTINUOUS = "continuous"  # N requests in flight, a new one sent as one ends (aiperf, vLLM bench serve)
SYNCHRONIZED = "synchronized-rounds"  # N requests released together, the next round when all ended
CONCURRENCY_MODES = (CONTINUOUS, SYNCHRONIZED)
ARRIVALS = ("poisson", "constant")
SLO_METRICS = {"ttft": "TTFT", "itl": "ITL p95 of the request", "tpot": "TPOT", "e2e": "end-to-end latency"}
DEFAULT_RATE_REQUESTS = 32  # requests of one rate case when neither a count nor a duration is given
SWEEP_FRACTIONS = 6  # --mlx-server-rates sweep: rates at 1/4, 2/4, ... 6/4 of the measured capacity
DEFAULT_LEAK_MB = 8.0  # growth per 100 requests above which a soak's trend is a leak
MAX_RATE = 10_000.0


def parse_mode(value: Any, where: str) -> str:
    text = str(value).strip()
    if text not in CONCURRENCY_MODES:
        raise SettingsError(f"{where} {text!r}: choose {' or '.join(CONCURRENCY_MODES)}")
    return text


def parse_rates(value: Any, where: str) -> tuple[tuple[float, ...], int]:
    """``0.5,1,2`` (requests per second: fixed rates) or ``sweep[:N]`` (N rates spread over 1/4
    to N/4 of the server's capacity, measured first): (rates, sweep points)."""
    text = str(value).strip()
    match = re.fullmatch(r"sweep(?::(\d+))?", text)
    if match:
        points = positive_int(where, match[1] or SWEEP_FRACTIONS, minimum=2, maximum=40)
        return (), points
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    if not parts:
        raise SettingsError(f"{where}: give request rates per second, e.g. 0.5,1,2, or sweep")
    rates = []
    for part in parts:
        try:
            rate = float(part.removesuffix("rps"))
        except ValueError:
            rate = math.nan
        if not 0 < rate <= MAX_RATE:
            raise SettingsError(f"{where}: bad rate {part!r}: requests per second above 0 and at "
                                f"most {MAX_RATE:g}, e.g. 0.5,1,2 (or sweep)")
        rates.append(rate)
    return tuple(dict.fromkeys(rates)), 0


def rate_id(rate: float) -> str:
    """A rate case's id: ``0.5rps``, ``2rps``."""
    return f"{rate:g}rps"


def sweep_fractions(points: int) -> tuple[float, ...]:
    """The fractions of the capacity a sweep of ``points`` rates measures: 1/4, 2/4, ..."""
    return tuple((i + 1) / 4 for i in range(points))


def parse_slo(value: Any, where: str) -> dict[str, float]:
    """``ttft=500,itl=50`` (milliseconds; ``ttft=0.5s`` too) -> {"ttft": 0.5, "itl": 0.05} in seconds."""
    out: dict[str, float] = {}
    parts = [p for p in re.split(r"[,\s]+", str(value)) if p]
    if not parts:
        raise SettingsError(f"{where}: give objectives, e.g. ttft=500,itl=50 (milliseconds)")
    for part in parts:
        name, sep, amount = part.partition("=")
        name = name.strip().lower()
        match = re.fullmatch(r"([0-9.eE+-]+)\s*(ms|s)?", amount.strip())
        if not sep or name not in SLO_METRICS or match is None:
            raise SettingsError(f"{where}: bad objective {part!r}: write NAME=MILLISECONDS with NAME "
                                f"one of {', '.join(SLO_METRICS)}, e.g. ttft=500,itl=50")
        try:
            number = float(match[1])
        except ValueError:
            number = math.nan
        if not 0 < number < 1e9:
            raise SettingsError(f"{where}: bad objective {part!r}: the limit must be above 0")
        out[name] = number if match[2] == "s" else number / 1000
    return out


def parse_soak(value: Any, where: str) -> tuple[int, float | None]:
    """``500`` (requests) or ``600s`` (seconds) -> (requests, seconds)."""
    text = str(value).strip().lower()
    if text.endswith("s") and text[:-1].replace(".", "", 1).isdigit():
        seconds = float(text[:-1])
        if not 0 < seconds <= 7 * 86400:
            raise SettingsError(f"{where}: a soak of {text!r}: give seconds above 0, at most a week")
        return 0, seconds
    if not text.isdigit():
        raise SettingsError(f"{where}: give a request count (e.g. 500) or seconds (e.g. 600s), got {value!r}")
    return positive_int(where, text, minimum=20), None


# -- workload files -----------------------------------------------------------------------------

BUILTIN_WORKLOADS = ("mixed", "multiturn")


def builtin_workload(name: str, resolutions: tuple[Resolution, ...], prompt: str) -> WorkloadFile:
    """``mixed``: each size of the sweep with a short and a long prompt, interleaved (16
    requests at least); ``multiturn``: 4 sessions of 3 turns, the first turn's image sent again."""
    sizes = list(resolutions) or [Resolution(448, 448)]
    long_prompt = prompt + " " + " ".join(
        ["List every object, its colour, its position and what it is next to."] * 3)
    if name == "mixed":
        convs = []
        i = 0
        while len(convs) < max(16, 2 * len(sizes)):
            size = sizes[i % len(sizes)]
            text = long_prompt if (i // len(sizes)) % 2 else prompt
            convs.append(Conversation((Turn(text, (size,)),)))
            i += 1
        return WorkloadFile(name, "built-in", tuple(convs))
    if name == "multiturn":
        follow = ("What is in the top left corner?", "And what colour dominates it?")
        convs = [Conversation((Turn(prompt, (sizes[s % len(sizes)],)), *(Turn(f) for f in follow)),
                              session_id=f"session-{s}") for s in range(4)]
        return WorkloadFile(name, "built-in", tuple(convs))
    raise SettingsError(f"unknown built-in workload {name!r}: use {', '.join(BUILTIN_WORKLOADS)} or a JSONL file")


def _turn(obj: Any, where: str, base: Path) -> Turn:
    if not isinstance(obj, dict):
        raise SettingsError(f"{where}: a request must be a JSON object, got {type(obj).__name__}")
    text = obj.get("text", obj.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise SettingsError(f"{where}: a request needs \"text\" (or \"prompt\"): a non-empty string")
    raw = obj.get("image", obj.get("images", []))
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(i, str) and i for i in raw):
        raise SettingsError(f"{where}: \"image\" must be a path, a URL or a size WxH (or a list of them)")
    images: list[str | Resolution] = []
    for item in raw:
        if re.fullmatch(r"\s*\d+\s*[xX×]\s*\d+\s*", item):
            images.append(parse_resolution(item))
        elif re.match(r"(https?|data):", item):
            images.append(item)
        else:
            path = Path(item) if Path(item).is_absolute() else base / item
            if not path.is_file():
                raise SettingsError(f"{where}: image {item!r}: no such file ({path})")
            images.append(str(path))
    length = obj.get("output_length", obj.get("max_tokens"))
    max_tokens = None if length is None else positive_int(f"{where}: output_length", length)
    return Turn(text, tuple(images), max_tokens)


def load_workload(path: Path, where: str = "--mlx-server-workload") -> WorkloadFile:
    """A JSONL workload: one request per line (``{"text", "image", "output_length"}``) or one
    session per line (``{"session_id", "turns": [...]}``); SettingsError naming the line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where} {str(path)!r}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    convs: list[Conversation] = []
    base = Path(path).parent
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{where} {path}, line {number}"
        try:
            obj: Any = json.loads(line)
        except ValueError as exc:
            raise SettingsError(f"{at}: not JSON ({exc})") from None
        if isinstance(obj, dict) and "turns" in obj:
            turns = obj["turns"]
            if not isinstance(turns, list) or not turns:
                raise SettingsError(f"{at}: \"turns\" must be a non-empty list of requests")
            convs.append(Conversation(tuple(_turn(t, f"{at}, turn {i + 1}", base) for i, t in enumerate(turns)),
                                      session_id=str(obj.get("session_id") or f"line-{number}")))
        else:
            convs.append(Conversation((_turn(obj, at, base),)))
    if not convs:
        raise SettingsError(f"{where} {path}: no requests in the file")
    return WorkloadFile(Path(path).stem, str(path), tuple(convs))


def resolve_workloads(value: Any, where: str, base_dir: Path, resolutions: tuple[Resolution, ...],
                      prompt: str) -> tuple[WorkloadFile, ...]:
    """The workloads named by ``value`` (comma-separated paths or built-in names), read now so
    that a bad file stops the run before anything is measured."""
    items = value if isinstance(value, (list, tuple)) else [value]
    names = [p for item in items for p in re.split(r"[,\s]+", str(item)) if p]
    out: dict[str, WorkloadFile] = {}
    for name in names:
        if name in BUILTIN_WORKLOADS:
            work = builtin_workload(name, resolutions, prompt)
        else:
            path = Path(name) if Path(name).is_absolute() else base_dir / name
            if not path.is_file():
                raise SettingsError(f"{where} {name!r}: no such file (or a built-in workload: "
                                    f"{', '.join(BUILTIN_WORKLOADS)})")
            work = load_workload(path, where)
        if work.name in out:
            raise SettingsError(f"{where}: two workloads named {work.name!r}; rename one file")
        out[work.name] = work
    return tuple(out.values())
