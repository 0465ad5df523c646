"""Per-request output (reports/requests.py): one JSON line and one CSV row per request."""

from __future__ import annotations

import csv
import json

from pytest_mlxvlm.reports.requests import case_stem, write_requests


def test_each_request_is_a_json_line_and_a_csv_row(tmp_path):
    rows = [{"index": 0, "ok": True, "error": None, "ttft_ms": 12.5, "itl_ms": [1.0, 2.0], "images": "448x448",
             "turn": 1},
            {"index": 1, "ok": False, "error": "HTTP 500", "ttft_ms": None, "images": "224x224"}]
    paths = write_requests(tmp_path / "out", "synthetic:tiny",
                           "pytest_mlxvlm.builtin.test_mlxvlm_server::test_server_rate[0.5rps]", rows)
    assert [p.name for p in paths] == ["synthetic-tiny__server_rate-0.5rps.jsonl", "synthetic-tiny__server_rate-0.5rps.csv"]
    assert [json.loads(line) for line in paths[0].read_text().splitlines()] == rows
    table = list(csv.DictReader(paths[1].open()))
    assert table[0]["ttft_ms"] == "12.5" and table[1]["error"] == "HTTP 500" and table[1]["ttft_ms"] == ""
    assert "itl_ms" not in table[0] and table[0]["images"] == "448x448" and table[1]["turn"] == ""
    assert list(table[0])[:3] == ["index", "ok", "error"]


def test_case_stems_are_safe_file_names():
    assert case_stem("mlx-community/Qwen3-VL-8B-Instruct-4bit",
                     "m::test_server_workload[my work-c4]") == "mlx-community-Qwen3-VL-8B-Instruct-4bit__server_workload-my-work-c4"
