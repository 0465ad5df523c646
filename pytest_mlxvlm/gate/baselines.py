"""Baseline storage: ``<dir>/<chip-key>/<model-slug>.json``, validated, written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.files import atomic_write_text, locked
from ..common.validate import InvalidInput, number, numbers, obj, read_json, schema_is, show, text
from ..results import BASELINE_SCHEMA, METRICS, CaseResult

KINDS = ("measured", "reference")
MAX_SESSIONS = 10  # sessions kept per case by --mlx-update-baselines=add


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and what to do."""


@dataclass
class BaselineCase:
    """The stored samples of one case, grouped by the session that measured them."""

    test: str
    resolution: str
    sessions: dict[str, list[list[float]]]  # metric -> one list of samples per session
    libraries: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    recorded: list[str] = field(default_factory=list)  # when each session ran (UTC, ISO 8601)
    hosts: list[str] = field(default_factory=list)  # which machine ran each session (machine.host_id)
    work: dict[str, Any] | None = None  # the last session's work profile (measure/work.py) and token_ids

    @property
    def metrics(self) -> dict[str, list[float]]:
        """Every sample of each metric, all sessions pooled."""
        return {name: [v for session in groups for v in session]
                for name, groups in self.sessions.items()}

    def median(self, metric: str) -> float:
        from statistics import median

        return float(median(self.metrics[metric]))

    @property
    def n_sessions(self) -> int:
        return max((len(groups) for groups in self.sessions.values()), default=0)

    def added(self, other: BaselineCase) -> BaselineCase:
        """This case with another session's samples appended (keeping the last sessions)."""
        merged = {name: (self.sessions.get(name, []) + groups)[-MAX_SESSIONS:]
                  for name, groups in other.sessions.items()}
        recorded = _kept(self.recorded, self.n_sessions, other.recorded, other.n_sessions)
        hosts = _kept(self.hosts, self.n_sessions, other.hosts, other.n_sessions)
        return BaselineCase(other.test, other.resolution, merged, other.libraries, other.workload,
                            recorded, hosts, other.work if other.work is not None else self.work)

    @property
    def n_hosts(self) -> int:
        """Machines the sessions ran on (0: unknown, written by an older version)."""
        return len({h for h in self.hosts if h})


def _kept(own: list[str], n_own: int, new: list[str], n_new: int) -> list[str]:
    """Per-session labels (dates, hosts) of the sessions kept, "" for a session that has none
    (written by an older version; it ages out as newer sessions replace it); [] when none has."""
    labels = ((own if len(own) == n_own else [""] * n_own)
              + (new if len(new) == n_new else [""] * n_new))[-MAX_SESSIONS:]
    return labels if any(labels) else []


@dataclass
class BaselineFile:
    """All stored cases of one model on one chip."""

    path: Path
    model: str
    chip: str
    kind: str = "measured"
    machine: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    cases: dict[str, BaselineCase] = field(default_factory=dict)

    def to_json(self) -> str:
        """Stable, reviewable JSON: fixed key order, cases sorted by key."""
        doc: dict[str, Any] = {
            "schema_version": BASELINE_SCHEMA,
            "kind": self.kind,
            "model": self.model,
            "chip": self.chip,
            "machine": dict(sorted(self.machine.items())),
        }
        if self.reference:
            doc["reference"] = self.reference
        doc["cases"] = {}
        for key in sorted(self.cases):
            case = self.cases[key]
            doc["cases"][key] = {
                "test": case.test,
                "resolution": case.resolution,
                "libraries": dict(sorted(case.libraries.items())),
                "workload": dict(sorted(case.workload.items())),
                "sessions": case.n_sessions,
                **({"recorded": case.recorded} if case.recorded else {}),
                **({"hosts": case.hosts} if case.hosts else {}),
                "metrics": {
                    name: {
                        "median": _round(case.median(name)),
                        "samples": [[_round(v) for v in group] for group in case.sessions[name]],
                    }
                    for name in METRICS
                    if name in case.sessions
                },
                **({"work": case.work} if case.work is not None else {}),
            }
        try:
            return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        except ValueError:  # NaN or infinity: the file would not be read back
            raise BaselineError(
                f"baseline {self.path} not written: a value is not finite (NaN or infinity); "
                "the measurements of this session are not stored"
            ) from None


def _round(value: float) -> float | int:
    if float(value).is_integer():
        return int(value)
    return float(f"{value:.6g}")


def baseline_path(directory: Path, chip: str, model_slug: str) -> Path:
    return directory / chip / f"{model_slug}.json"


def reference_path(directory: Path, chip: str, model_slug: str) -> Path:
    """Published reference results live beside measured baselines and are used without them."""
    return directory / chip / f"{model_slug}.reference.json"


def _fail(path: Path, problem: str) -> BaselineError:
    return BaselineError(
        f"corrupt baseline {path}: {problem}. Nothing was overwritten; fix the file by hand "
        "or delete it and run with --mlx-update-baselines"
    )


def read(path: Path, *, expect_chip: str | None = None) -> BaselineFile:
    """Read and validate a baseline file; BaselineError names the file and the problem.

    Every field is checked for its type (deep nesting, NaN and numbers beyond a float included),
    so that a file that was read can be used and written back."""
    try:
        doc = read_json(path)
        return _parse(path, doc, expect_chip)
    except InvalidInput as exc:
        raise _fail(path, str(exc)) from None


def _parse(path: Path, doc: Any, expect_chip: str | None) -> BaselineFile:
    if not isinstance(doc, dict):
        raise InvalidInput("the top level is not an object")
    version = doc.get("schema_version")
    if not schema_is(version, BASELINE_SCHEMA):
        raise InvalidInput(f"unknown schema_version {show(version)} (this plugin reads {BASELINE_SCHEMA})")
    for key in ("model", "chip", "cases"):
        if key not in doc:
            raise InvalidInput(f"missing {key!r}")
    model, chip = text(doc["model"], "model"), text(doc["chip"], "chip")
    kind = doc.get("kind", "measured")
    if kind not in KINDS:
        raise InvalidInput(f"unknown kind {show(kind)}")
    if expect_chip is not None and chip != expect_chip:
        raise InvalidInput(f"it is for chip {chip!r}, not {expect_chip!r}")
    machine = obj(doc.get("machine"), "machine", optional=True)
    reference = obj(doc.get("reference"), "reference", optional=True)
    # the gate's tolerance for a reference: a fraction, 0.3 = 30%
    number(reference.get("tolerance"), "reference.tolerance", optional=True, minimum=0)
    if not isinstance(doc["cases"], dict):
        raise InvalidInput("'cases' is not an object")
    cases: dict[str, BaselineCase] = {}
    for key, raw in doc["cases"].items():
        where = f"case {key!r}"
        if not isinstance(raw, dict) or not isinstance(raw.get("metrics"), dict):
            raise InvalidInput(f"{where} has no 'metrics' object")
        metrics: dict[str, list[list[float]]] = {}
        for name, entry in raw["metrics"].items():
            if name not in METRICS:
                raise InvalidInput(f"{where}: unknown metric {show(name)}")
            samples = entry.get("samples") if isinstance(entry, dict) else None
            if not isinstance(samples, list) or not samples:
                raise InvalidInput(f"{where}, {name}: missing samples")
            # one list per session; a flat list is one session
            groups = samples if all(isinstance(g, list) for g in samples) else [samples]
            for group in groups:
                if not group:
                    raise InvalidInput(f"{where}, {name}: an empty session")
            metrics[name] = [numbers(group, f"{where}, {name}", minimum=0, label="sample ")
                             for group in groups]
        if not metrics:
            raise InvalidInput(f"{where} has no metrics")
        try:
            case = BaselineCase(
                test=text(raw.get("test", key), "test"),
                resolution=text(raw.get("resolution", ""), "resolution"),
                sessions=metrics,
                libraries=dict(obj(raw.get("libraries"), "libraries", optional=True)),
                workload=dict(obj(raw.get("workload"), "workload", optional=True)),
            )
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        recorded = raw.get("recorded")
        # informational only: a missing or odd list is not an error, it is left out
        if (isinstance(recorded, list) and len(recorded) == case.n_sessions
                and all(isinstance(r, str) for r in recorded)):
            case.recorded = list(recorded)
        hosts = raw.get("hosts")
        if (isinstance(hosts, list) and len(hosts) == case.n_sessions
                and all(isinstance(h, str) for h in hosts)):
            case.hosts = list(hosts)
        if raw.get("work") is not None:
            case.work = check_work(raw["work"], f"{where}: work")
        cases[key] = case
    return BaselineFile(path=path, model=model, chip=chip, kind=kind, machine=dict(machine),
                        reference=dict(reference), cases=cases)


def check_work(data: Any, where: str) -> dict[str, Any]:
    """A stored work profile, checked to read back as one (InvalidInput naming what is wrong)."""
    from ..measure.work import WorkProfile

    work = obj(data, where)
    if not isinstance(work.get("phases"), dict):
        raise InvalidInput(f"{where}: no 'phases' object")
    ids = work.get("token_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput(f"{where}: 'token_ids' is not a list of integers")
    try:
        WorkProfile.from_dict(work)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidInput(f"{where}: {type(exc).__name__}: {exc}") from None
    return dict(work)


def case_from_result(result: CaseResult, libraries: dict[str, Any], host: str = "") -> BaselineCase:
    from datetime import datetime, timezone

    return BaselineCase(
        test=result.test_name,
        resolution=result.resolution,
        sessions={name: [result.values(name)] for name in METRICS},
        libraries=libraries,
        workload=dict(result.workload),
        recorded=[datetime.now(timezone.utc).isoformat(timespec="seconds")],
        hosts=[host] if host else [],
        work=result.work,
    )


BURST_SECONDS = 3600.0  # baseline sessions closer together than this saw little of the drift


def burst_note(stored: BaselineFile) -> str | None:
    """A note when all sessions of a measured baseline were recorded within an hour on one machine.

    Their spread is then the drift of minutes, not of hours and days (other load, thermal
    state, reboots), and the gate's drift allowance is narrower than the machine's drift."""
    from datetime import datetime

    dated = [c for c in stored.cases.values() if c.n_sessions >= 2 and c.recorded and all(c.recorded)]
    if stored.kind != "measured" or not dated:
        return None
    case = max(dated, key=lambda c: c.n_sessions)
    try:
        times = [datetime.fromisoformat(r) for r in case.recorded if r]
        span = (max(times) - min(times)).total_seconds()
    except (ValueError, TypeError):
        return None
    if span >= BURST_SECONDS or case.n_hosts >= 2:
        return None
    return (f"the {case.n_sessions} baseline sessions in {stored.path} were recorded within "
            f"{max(1, round(span / 60))} min on one machine: the drift allowance knows only this "
            "short a spread; add sessions at other times or from other machines "
            "(--mlx-update-baselines=add, e.g. nightly)")


def update(
    path: Path,
    *,
    model: str,
    chip: str,
    machine: dict[str, Any],
    cases: dict[str, BaselineCase],
    mode: str = "all",
) -> list[str]:
    """Merge cases into the file under a lock and write it atomically; returns keys written.

    ``mode``: ``all`` replaces each case with this session, ``new`` writes only missing
    cases, ``add`` appends this session to each case (a baseline of several sessions, so
    that the gate knows how much results drift from one session to the next).
    A corrupt existing file raises BaselineError and is left as it is.
    """
    with locked(path):
        if path.exists():
            current = read(path, expect_chip=chip)
            if current.kind == "reference":
                raise BaselineError(
                    f"{path} holds reference results; it is never overwritten by measurements "
                    "(use --mlx-chip to measure under another key)"
                )
        else:
            current = BaselineFile(path=path, model=model, chip=chip)
        written = []
        for key, case in cases.items():
            if mode == "new" and key in current.cases:
                continue
            if mode == "add" and key in current.cases:
                previous = current.cases[key]
                same_work = all(previous.workload.get(k) == case.workload.get(k)
                                for k in ("prompt", "max_tokens", "image"))
                current.cases[key] = previous.added(case) if same_work else case
            else:
                current.cases[key] = case
            written.append(key)
        if written:
            current.machine = machine
            atomic_write_text(path, current.to_json())
        return written
