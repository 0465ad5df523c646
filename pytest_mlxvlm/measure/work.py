"""The work profile of one generation: MLX primitives, evals and host syncs per phase, counted
exactly (the vocabulary: ``PhaseWork``, ``StepEvent``, ``WorkProfile`` and ``summarise``).

``measure.recorder`` records one: it reads the lazy graph MLX runs at each eval and host read,
by phase (``prefill``, each decode step, the ``tail``). ``summarise`` turns its raw counts into a
profile: ``decode_step`` is the most common step and ``events`` the steps that differ from it
(the KV cache growing by a block, the cache state evaluated every 50 tokens), each as its
difference to ``decode_step``. Counts do not depend on timing: the same code on the same graph
gives the same profile in every round and process.

Only the standard library: nothing here imports mlx.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

FORMAT = 1  # the version of ``WorkProfile.to_dict``'s layout

PREFILL = "prefill"
DECODE_STEP = "decode_step"
TAIL = "tail"

# Primitives that only describe how existing memory is viewed, or order the graph: no arithmetic
# and, on contiguous inputs, no copy. Everything else counts as compute, including the ones that
# move data without arithmetic (Copy, Contiguous, Concatenate, Pad, Full, Gather, SliceUpdate, ...):
# they read and write memory. Reshape copies a non-contiguous input and is still counted here.
VIEW_PRIMITIVES = frozenset({
    "AsStrided", "Broadcast", "BroadcastAxes", "Depends", "ExpandDims", "Flatten", "Reshape",
    "Slice", "Split", "Squeeze", "StopGradient", "Transpose", "Unflatten",
})




class WorkProfileUnavailable(RuntimeError):
    """This environment cannot record a work profile (no mlx, no ``mx.export_to_dot``, ...)."""


def is_view(name: str) -> bool:
    """Whether a primitive only views memory (``Reshape``, ``Slice``, ...); ``View <dtype>`` too."""
    return name in VIEW_PRIMITIVES or name.startswith("View")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def nonzero_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Non-zero counts in name order."""
    return {k: int(counts[k]) for k in sorted(counts) if counts[k]}


@dataclass
class PhaseWork:
    """The counts of one phase (or, in a ``StepEvent``, signed differences of counts)."""

    primitives: dict[str, int] = field(default_factory=dict)
    evals: int = 0
    async_evals: int = 0
    syncs: int = 0
    sync_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        """Primitives in all, of every kind."""
        return sum(self.primitives.values())

    @property
    def hash(self) -> str:
        """A digest of the counts: two phases did the same work exactly when their hashes match."""
        return _digest(self.signature())

    def signature(self) -> tuple[Any, ...]:
        """The counts as a hashable, order-independent value."""
        return (tuple(sorted((k, v) for k, v in self.primitives.items() if v)), self.evals,
                self.async_evals, self.syncs, tuple(sorted((k, v) for k, v in self.sync_kinds.items() if v)))

    def is_empty(self) -> bool:
        return not (any(self.primitives.values()) or self.evals or self.async_evals or self.syncs
                    or any(self.sync_kinds.values()))

    def minus(self, other: PhaseWork) -> PhaseWork:
        """These counts less ``other``'s (zeros left out)."""
        prims = Counter(self.primitives)
        prims.subtract(other.primitives)
        kinds = Counter(self.sync_kinds)
        kinds.subtract(other.sync_kinds)
        return PhaseWork(nonzero_counts(prims), self.evals - other.evals, self.async_evals - other.async_evals,
                         self.syncs - other.syncs, nonzero_counts(kinds))

    def to_dict(self) -> dict[str, Any]:
        return {"primitives": nonzero_counts(self.primitives), "nodes": self.nodes, "evals": self.evals,
                "async_evals": self.async_evals, "syncs": self.syncs,
                "sync_kinds": nonzero_counts(self.sync_kinds), "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseWork:
        """Read ``to_dict``'s output back (``nodes`` and ``hash`` are recomputed)."""
        return cls(primitives={str(k): int(v) for k, v in dict(data.get("primitives") or {}).items()},
                   evals=int(data.get("evals", 0)), async_evals=int(data.get("async_evals", 0)),
                   syncs=int(data.get("syncs", 0)),
                   sync_kinds={str(k): int(v) for k, v in dict(data.get("sync_kinds") or {}).items()})


@dataclass
class StepEvent:
    """A decode step whose work differs from the usual step: ``delta`` = that step - ``decode_step``."""

    step: int
    delta: PhaseWork

    def to_dict(self) -> dict[str, Any]:
        d = self.delta.to_dict()
        del d["hash"], d["nodes"]
        return {"step": self.step, **d}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepEvent:
        return cls(step=int(data["step"]), delta=PhaseWork.from_dict(data))


@dataclass
class WorkProfile:
    """The work of one generation: whole phases, the usual decode step and the steps that differ.

    ``phases`` holds the phases before the first token (``prefill``, or the ones named by the
    caller), ``decode_step`` (the modal step; empty with fewer than two tokens) and ``tail``.
    """

    phases: dict[str, PhaseWork]
    events: list[StepEvent] = field(default_factory=list)
    tokens: int = 0
    decode_steps: int = 0
    prompt_tokens: int | None = None
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def prefill(self) -> PhaseWork:
        return self.phases.get(PREFILL, PhaseWork())

    @property
    def decode_step(self) -> PhaseWork:
        return self.phases.get(DECODE_STEP, PhaseWork())

    @property
    def tail(self) -> PhaseWork:
        return self.phases.get(TAIL, PhaseWork())

    @property
    def hash(self) -> str:
        """A digest of all the work (phases, events, step count), not of the key."""
        return _digest({"phases": {n: p.hash for n, p in self.phases.items()},
                        "events": [e.to_dict() for e in self.events], "decode_steps": self.decode_steps})

    def step(self, k: int) -> PhaseWork:
        """The work of decode step ``k`` (1 .. decode_steps), rebuilt from the modal step and events."""
        if not 1 <= k <= self.decode_steps:
            raise IndexError(f"decode step {k} out of 1..{self.decode_steps}")
        for event in self.events:
            if event.step == k:
                return _plus(self.decode_step, event.delta)
        return self.decode_step

    def total(self) -> PhaseWork:
        """The work of the whole generation, all phases and steps together."""
        out = PhaseWork()
        for name, work in self.phases.items():
            if name != DECODE_STEP:
                out = _plus(out, work)
        for k in range(1, self.decode_steps + 1):
            out = _plus(out, self.step(k))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data in a stable key order."""
        return {
            "format": FORMAT,
            "hash": self.hash,
            "key": {k: self.key[k] for k in sorted(self.key)},
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "decode_steps": self.decode_steps,
            "phases": {name: work.to_dict() for name, work in self.phases.items()},
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkProfile:
        if int(data.get("format", FORMAT)) > FORMAT:
            raise ValueError(f"work profile format {data.get('format')} is newer than this reader ({FORMAT})")
        prompt = data.get("prompt_tokens")
        return cls(
            phases={str(n): PhaseWork.from_dict(p) for n, p in dict(data.get("phases") or {}).items()},
            events=[StepEvent.from_dict(e) for e in data.get("events") or []],
            tokens=int(data.get("tokens", 0)),
            decode_steps=int(data.get("decode_steps", 0)),
            prompt_tokens=None if prompt is None else int(prompt),
            key=dict(data.get("key") or {}),
        )


def _plus(a: PhaseWork, b: PhaseWork) -> PhaseWork:
    prims = Counter(a.primitives)
    prims.update(b.primitives)
    kinds = Counter(a.sync_kinds)
    kinds.update(b.sync_kinds)
    return PhaseWork(nonzero_counts(prims), a.evals + b.evals, a.async_evals + b.async_evals,
                     a.syncs + b.syncs, nonzero_counts(kinds))


def summarise(before: Mapping[str, PhaseWork], steps: list[PhaseWork], tail: PhaseWork | None = None,
              *, tokens: int | None = None, prompt_tokens: int | None = None,
              key: Mapping[str, Any] | None = None) -> WorkProfile:
    """A profile from raw counts: the phases before the first token, one ``PhaseWork`` per decode
    step (step 1 first) and the tail. The modal step is the most common one (ties: the earliest)."""
    phases = {name: work for name, work in before.items()}
    events: list[StepEvent] = []
    if steps:
        signatures = [s.signature() for s in steps]
        counts = Counter(signatures)
        best = max(counts.values())
        modal_index = next(i for i, sig in enumerate(signatures) if counts[sig] == best)
        modal = steps[modal_index]
        phases[DECODE_STEP] = PhaseWork(nonzero_counts(modal.primitives), modal.evals, modal.async_evals,
                                        modal.syncs, nonzero_counts(modal.sync_kinds))
        events = [StepEvent(k, s.minus(modal)) for k, s in enumerate(steps, start=1)
                  if signatures[k - 1] != signatures[modal_index]]
    else:
        phases[DECODE_STEP] = PhaseWork()
    phases[TAIL] = tail if tail is not None else PhaseWork()
    return WorkProfile(phases=phases, events=events,
                       tokens=len(steps) + 1 if tokens is None else tokens,
                       decode_steps=len(steps), prompt_tokens=prompt_tokens, key=dict(key or {}))


def primitive_names(profile: WorkProfile) -> Iterable[str]:
    """Every primitive name in a profile, sorted (for tables)."""
    names: set[str] = set()
    for work in profile.phases.values():
        names.update(work.primitives)
    for event in profile.events:
        names.update(event.delta.primitives)
    return sorted(names)
