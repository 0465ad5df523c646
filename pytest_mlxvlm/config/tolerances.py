"""Tolerances of the gate: the defaults of a stored baseline and of the A/B mode, and their parsing."""

from __future__ import annotations

from typing import Sequence

from ..results import EXACT_METRICS, METRICS, metric_name, metric_names

# Relative tolerances; the metrics listed here are gated by default.
DEFAULT_TOLERANCES: dict[str, float] = {
    "end_to_end_tps": 0.10,
    "generation_tps": 0.10,
    "ttft_s": 0.15,
    "peak_memory": 0.05,
}


class ToleranceError(ValueError):
    """A tolerance setting that cannot be parsed."""


def _entries(entries: Sequence[str]) -> list[str]:
    """``NAME=VALUE`` items from comma- or space-separated text; a name may hold spaces
    (``Peak mem=5``): a word without ``=`` joins the item after it."""
    items: list[str] = []
    pending: list[str] = []
    for entry in entries:
        for chunk in str(entry).split(","):
            for word in chunk.split():
                pending.append(word)
                if "=" in word:
                    items.append(" ".join(pending))
                    pending = []
            if pending:  # a name with no value before the comma or the end
                items.append(" ".join(pending))
                pending = []
    return items


def parse_tolerances(entries: Sequence[str]) -> dict[str, float | None]:
    """``["Speed=20", "peak_memory=off"]`` -> ``{"end_to_end_tps": 0.2, "peak_memory": None}``.

    A metric is named as the tables name it (Speed, Decode, TTFT, Prefill, Peak mem, ...; any
    case) or by its JSON field (``end_to_end_tps``); the result is keyed by the JSON field."""
    out: dict[str, float | None] = {}
    for item in _entries(entries):
        text, sep, value = item.partition("=")
        name = metric_name(text.strip()) if sep else None
        if name is None or name in EXACT_METRICS:
            why = (f"{text.strip()!r} is a token count, compared exactly" if name in EXACT_METRICS
                   else f"no metric is called {text.strip()!r}" if sep else "no '='")
            raise ToleranceError(
                f"bad tolerance {item!r} ({why}): write METRIC=PERCENT or METRIC=off, METRIC one of "
                f"{metric_names(gated_only=True)}"
            )
        if value.strip().lower() == "off":
            out[name] = None
            continue
        try:
            pct = float(value.strip().rstrip("%"))
        except ValueError:
            raise ToleranceError(f"bad tolerance {item!r}: {value!r} is not a percentage") from None
        if not 0 <= pct < 1000:
            raise ToleranceError(f"bad tolerance {item!r}: percent must be between 0 and 1000")
        out[name] = pct / 100
    return out


def describe_tolerances(tolerances: dict[str, float]) -> str:
    """``Speed=10 Decode=10 TTFT=15 Peak_mem=5``: tolerances as an option would set them."""
    return " ".join(f"{METRICS[m].heading.replace(' ', '_')}={v * 100:g}" for m, v in tolerances.items())


def merge_tolerances(*layers: dict[str, float | None]) -> dict[str, float]:
    """Defaults overridden by each layer in turn; ``None`` switches a metric off."""
    merged: dict[str, float | None] = dict(DEFAULT_TOLERANCES)
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in merged.items() if v is not None}


# Tolerances of the A/B mode: base and head are measured side by side, so a much smaller
# change than a stored baseline's tolerance is both visible and worth failing a pull request on.
AB_TOLERANCES: dict[str, float] = {
    "end_to_end_tps": 0.05,
    "generation_tps": 0.03,
    "ttft_s": 0.05,
    "peak_memory": 0.05,
}
