"""Exact comparison of two work profiles (base and head, or a stored baseline and now).

Work counts do not vary from run to run, so there is no statistics here: any difference is a
change of the code (or of what the profile's key names: versions, device, compile, the case).

Verdicts, in this order of precedence:

- ``"not comparable"``: the keys differ in a part both sides know (``mlx 0.32.4 → 0.33.0``), or
  the generations differ in length; nothing else is compared;
- ``"same"``: the same work in every phase and step;
- ``"added"``: head runs more compute primitives, evals, async evals or host syncs somewhere (a
  regression; removals elsewhere are reported with it);
- ``"removed"``: head only runs fewer of them (an improvement);
- ``"views"``: only view primitives changed (reshape, slice, ...): reported, not failed.

Pure standard library; works on ``WorkProfile`` objects or their ``to_dict()`` data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from ..measure.work import DECODE_STEP, PREFILL, TAIL, PhaseWork, WorkProfile, is_view
from ..results import WorkCheck

SAME = "same"
ADDED = "added"
REMOVED = "removed"
VIEWS = "views"
NOT_COMPARABLE = "not comparable"
VERDICTS = (SAME, ADDED, REMOVED, VIEWS, NOT_COMPARABLE)

ProfileLike = Union[WorkProfile, Mapping[str, Any]]

# How the key's parts read in a "not comparable" reason.
KEY_LABELS = {
    "mlx": "mlx", "mlx_vlm": "mlx-vlm", "device": "device", "backend": "backend",
    "compile": "compile", "model": "model", "prompt_tokens": "prompt tokens",
    "image_tokens": "image tokens", "image_size": "image size", "tokens": "generated tokens",
}


class PhaseDelta(PhaseWork):
    """head - base for one phase (zeros left out): a ``PhaseWork`` of signed counts."""

    @classmethod
    def of(cls, work: PhaseWork) -> PhaseDelta:
        return cls(dict(work.primitives), work.evals, work.async_evals, work.syncs, dict(work.sync_kinds))

    def is_zero(self) -> bool:
        return self.is_empty()

    def compute(self) -> dict[str, int]:
        """The changes of compute primitives (not views)."""
        return {k: v for k, v in self.primitives.items() if not is_view(k)}

    def views(self) -> dict[str, int]:
        return {k: v for k, v in self.primitives.items() if is_view(k)}

    def direction(self) -> tuple[bool, bool]:
        """(adds work, removes work): compute primitives, evals, async evals and syncs (a sync
        of another kind, ``item`` for ``tolist``, counts as both)."""
        values = [*self.compute().values(), self.evals, self.async_evals, self.syncs,
                  *self.sync_kinds.values()]
        return any(v > 0 for v in values), any(v < 0 for v in values)

    def to_dict(self) -> dict[str, Any]:
        return {"primitives": dict(self.primitives), "evals": self.evals,
                "async_evals": self.async_evals, "syncs": self.syncs, "sync_kinds": dict(self.sync_kinds)}


@dataclass
class WorkDiff:
    """What changed from base to head, by phase; ``events`` maps decode steps to the change of
    that step beyond the change of the usual step (``phases['decode_step']``)."""

    verdict: str
    phases: dict[str, PhaseDelta] = field(default_factory=dict)
    events: dict[int, PhaseDelta] = field(default_factory=dict)
    not_comparable: list[str] = field(default_factory=list)
    decode_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "not_comparable": list(self.not_comparable),
                "decode_steps": self.decode_steps,
                "phases": {n: d.to_dict() for n, d in self.phases.items()},
                "events": {str(k): d.to_dict() for k, d in sorted(self.events.items())}}


def _profile(value: ProfileLike) -> WorkProfile:
    return value if isinstance(value, WorkProfile) else WorkProfile.from_dict(value)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def key_differences(base: Mapping[str, Any], head: Mapping[str, Any]) -> list[str]:
    """The parts both keys know and that differ, as ``"mlx 0.32.4 → 0.33.0"``."""
    out = []
    for name in [*KEY_LABELS, *sorted(set(base) - set(KEY_LABELS))]:
        if name in base and name in head and base[name] != head[name]:
            out.append(f"{KEY_LABELS.get(name, name)} {_show(base[name])} → {_show(head[name])}")
    return out


def _delta(base: PhaseWork, head: PhaseWork) -> PhaseDelta:
    return PhaseDelta.of(head.minus(base))


def compare_profiles(base: ProfileLike, head: ProfileLike) -> WorkDiff:
    """Compare two profiles exactly; the verdict says whether head does more or less work."""
    b, h = _profile(base), _profile(head)
    reasons = key_differences(b.key, h.key)
    if b.tokens != h.tokens and not any(r.startswith("generated tokens") for r in reasons):
        reasons.append(f"generated tokens {b.tokens} → {h.tokens}")
    if (b.prompt_tokens is not None and h.prompt_tokens is not None and b.prompt_tokens != h.prompt_tokens
            and not any(r.startswith("prompt tokens") for r in reasons)):
        reasons.append(f"prompt tokens {b.prompt_tokens} → {h.prompt_tokens}")
    if not reasons and b.decode_steps != h.decode_steps:
        reasons.append(f"decode steps {b.decode_steps} → {h.decode_steps}")
    if reasons:
        return WorkDiff(NOT_COMPARABLE, not_comparable=reasons, decode_steps=h.decode_steps)

    phases: dict[str, PhaseDelta] = {}
    for name in [*b.phases, *(n for n in h.phases if n not in b.phases)]:
        delta = _delta(b.phases.get(name, PhaseWork()), h.phases.get(name, PhaseWork()))
        if not delta.is_zero():
            phases[name] = delta

    # per step: head(k) - base(k) = Δ(decode_step) + (head event(k) - base event(k))
    base_events = {e.step: e.delta for e in b.events}
    head_events = {e.step: e.delta for e in h.events}
    events: dict[int, PhaseDelta] = {}
    for step in sorted(set(base_events) | set(head_events)):
        extra = _delta(base_events.get(step, PhaseWork()), head_events.get(step, PhaseWork()))
        if not extra.is_zero():
            events[step] = extra

    # the verdict looks at each step's whole change: the usual step's, or an event step's
    event_steps = set(base_events) | set(head_events)
    changes = [d for n, d in phases.items() if n != DECODE_STEP]
    if DECODE_STEP in phases and len(event_steps) < h.decode_steps:
        changes.append(phases[DECODE_STEP])  # the steps that are usual on both sides
    for step in sorted(event_steps):
        if 1 <= step <= h.decode_steps:
            changes.append(PhaseDelta.of(h.step(step).minus(b.step(step))))
    adds = any(d.direction()[0] for d in changes)
    removes = any(d.direction()[1] for d in changes)
    if not phases and not events:
        verdict = SAME
    elif adds:
        verdict = ADDED
    elif removes:
        verdict = REMOVED
    elif any(not d.is_zero() for d in changes):
        verdict = VIEWS
    else:
        verdict = SAME  # event bookkeeping moved, every step's work is the same
    return WorkDiff(verdict, phases=phases, events=events, decode_steps=h.decode_steps)


def _plural(n: int, word: str) -> str:
    return f"{n:+d} {word}" + ("" if abs(n) == 1 else "s")


def describe_delta(delta: PhaseDelta, *, view_kinds: int = 2) -> str:
    """``"+60 Multiply, +1 eval, -1 async_eval"``: compute primitives by size of change, then view
    primitives (named where at most ``view_kinds`` kinds changed, else summed: ``"+11/-2 views"``),
    then evals, async evals and syncs."""
    def by_size(counts: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(counts.items(), key=lambda kv: (-abs(kv[1]), kv[0]))

    parts = [f"{v:+d} {k}" for k, v in by_size(delta.compute())]
    views = delta.views()
    if len(views) <= view_kinds or len(views) == len(delta.primitives):
        parts += [f"{v:+d} {k}" for k, v in by_size(views)]
    else:
        up = sum(v for v in views.values() if v > 0)
        down = sum(v for v in views.values() if v < 0)
        parts.append("/".join(f"{n:+d}" for n in (up, down) if n) + " views")
    if delta.evals:
        parts.append(_plural(delta.evals, "eval"))
    if delta.async_evals:
        parts.append(_plural(delta.async_evals, "async_eval"))
    if delta.syncs or delta.sync_kinds:
        kinds = ", ".join(f"{v:+d} {k}" for k, v in sorted(delta.sync_kinds.items()))
        total = _plural(delta.syncs, "sync") if delta.syncs else "syncs"
        parts.append(total + (f" ({kinds})" if kinds else ""))
    return ", ".join(parts)


PHASE_WORDS = {DECODE_STEP: "per decode step", PREFILL: "in prefill", TAIL: "after the last token"}


def describe(diff: WorkDiff) -> str:
    """One line: ``"+60 Multiply, +1 eval per decode step; +6 Matmul in prefill"``."""
    if diff.verdict == NOT_COMPARABLE:
        return "not comparable: " + ", ".join(diff.not_comparable)
    if diff.verdict == SAME and not diff.phases and not diff.events:
        return "same work"
    order = [DECODE_STEP, *(n for n in diff.phases if n not in (DECODE_STEP, TAIL)), TAIL]
    parts = []
    for name in order:
        if name in diff.phases:
            parts.append(f"{describe_delta(diff.phases[name])} {PHASE_WORDS.get(name, 'in ' + name)}")
    if diff.events:
        steps = [f"step {k}: {describe_delta(d)}" for k, d in sorted(diff.events.items())]
        shown = steps[:6] + ([f"{len(steps) - 6} more steps"] if len(steps) > 6 else [])
        on_top = "on top of that, " if DECODE_STEP in diff.phases else ""
        parts.append(on_top + "; ".join(shown))
    text = "; ".join(parts)
    if diff.verdict == VIEWS:
        text += " (views only)"
    return text


def compare_tokens(base_ids: Sequence[int], head_ids: Sequence[int]) -> int | None:
    """The first index where two generated token sequences differ (a length difference counts at
    the shorter one's end), or None where they are identical."""
    for i, (a, b) in enumerate(zip(base_ids, head_ids)):
        if int(a) != int(b):
            return i
    if len(base_ids) != len(head_ids):
        return min(len(base_ids), len(head_ids))
    return None


def describe_tokens(base_ids: Sequence[int], head_ids: Sequence[int]) -> str:
    """``"outputs identical"`` or ``"outputs differ from token 17"``."""
    index = compare_tokens(base_ids, head_ids)
    if index is None:
        return "outputs identical"
    if index == min(len(base_ids), len(head_ids)) and len(base_ids) != len(head_ids):
        return f"outputs differ from token {index} ({len(base_ids)} → {len(head_ids)} tokens)"
    return f"outputs differ from token {index}"


def check(current: Mapping[str, Any] | None, reference: Mapping[str, Any] | None, *, against: str,
          gated: bool = True, unavailable: str = "") -> WorkCheck:
    """A case's ``WorkCheck``: its profile data (``current``) against the baseline's or the A/B
    base's (``reference``); ``unavailable`` says why a side has none."""
    if current is None or (reference is None and unavailable):
        return WorkCheck("unavailable", against, f"no work profile: {unavailable or 'not recorded'}", gated=gated)
    if reference is None:
        return WorkCheck("new", against, f"no work profile in the {against} to compare with", gated=gated)
    diff = compare_profiles(reference, current)
    outputs, first = "", None
    if diff.verdict != NOT_COMPARABLE and reference.get("token_ids") and current.get("token_ids"):
        outputs = describe_tokens(reference["token_ids"], current["token_ids"])
        first = compare_tokens(reference["token_ids"], current["token_ids"])
    return WorkCheck(diff.verdict, against, describe(diff), outputs=outputs, outputs_differ_at=first,
                     gated=gated, diff=diff.to_dict())
