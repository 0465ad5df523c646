"""Per-request output of the serving cases (``--mlx-server-records DIR``): one JSON line a request
(``CASE.jsonl``, with every inter-token gap) and the same rows as a CSV (``CASE.csv``, the gaps
left out), written atomically, named after the model and the case."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from ..common.files import atomic_write_text

FIRST_COLUMNS = ("index", "ok", "error", "scheduled_ms", "sent_ms", "ended_ms", "queue_delay_ms", "in_flight",
                 "ttft_ms", "itl_p50_ms", "itl_p95_ms", "tpot_ms", "e2e_ms", "output_tokens", "prompt_tokens",
                 "cached_tokens", "finish_reason")


def case_stem(model: str, case_key: str) -> str:
    """``synthetic-tiny__server_concurrency-c2`` from the model and the case key."""
    name = case_key.rpartition("::")[2].removeprefix("test_")
    text = f"{model}__{name}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("[", "-").replace("]", "")).strip("-")


def write_requests(directory: Path, model: str, case_key: str, rows: list[dict[str, Any]]) -> list[Path]:
    """Write ``rows`` (``RequestRecord.row()``) as STEM.jsonl and STEM.csv; the paths written."""
    stem = case_stem(model, case_key)
    jsonl = Path(directory) / f"{stem}.jsonl"
    atomic_write_text(jsonl, "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows))
    extra = sorted({k for row in rows for k in row if k not in FIRST_COLUMNS and not isinstance(row[k], list)})
    columns = [*FIRST_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    path_csv = Path(directory) / f"{stem}.csv"
    atomic_write_text(path_csv, buffer.getvalue())
    return [jsonl, path_csv]
