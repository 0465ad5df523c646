"""Bad input, answered in one line: every reader (baselines, history, --mlx-json reports,
vllm-mlx imports, model folders) names the file and the field, deep nesting and huge numbers
included; the command exits 2 on bad input and 1 only for a regression, never with a traceback."""

import json
import subprocess
import sys

import pytest

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.gate import baselines
from pytest_mlxvlm.models import loading as models
from pytest_mlxvlm.models.loading import ModelLoadError
from pytest_mlxvlm.reports import history, merge
from pytest_mlxvlm.results import METRICS

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this
NESTED = '{"a": ' * 80 + "1" + "}" * 80  # loads, but deeper than any file of the plugin
HUGE = "1" + "0" * 400  # 10**400: an int that no float holds
SAMPLE = {**{m: 2.0 for m in METRICS}, "cached_tokens": 0}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """main() in this process: (exit status, stdout, stderr); argparse's exits included."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, start: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(start), err
    return lines[0]


# -- baselines ----------------------------------------------------------------------------------

def _baseline_text(case: dict | None = None, sample: str = "11.0", **top) -> str:
    doc = {"schema_version": 1, "kind": "measured", "model": "m", "chip": "c", "machine": {"key": "c"},
           "cases": {"k": {"test": "t", "resolution": "224x224", "libraries": {"mlx": "0.1"},
                           "workload": {"prompt": "p"},
                           "metrics": {"end_to_end_tps": {"samples": [[10.0, "SAMPLE"]]}}, **(case or {})}},
           **top}
    return json.dumps(doc).replace('"SAMPLE"', sample)


@pytest.mark.parametrize("text, field", [
    (_baseline_text(machine=[1]), "'machine'"),
    (_baseline_text(machine="apple"), "'machine'"),
    (_baseline_text(model=5), "'model'"),
    (_baseline_text(chip=["c"]), "'chip'"),
    (_baseline_text(reference=["source"]), "'reference'"),
    (_baseline_text(kind="reference", reference={"tolerance": "wide"}), "reference.tolerance"),
    (_baseline_text(kind="reference", reference={"tolerance": -1}), "reference.tolerance"),
    (_baseline_text({"libraries": "mlx 0.1"}), "'libraries'"),
    (_baseline_text({"workload": [["prompt", "p"]]}), "'workload'"),
    (_baseline_text({"workload": 7}), "'workload'"),
    (_baseline_text({"test": 5}), "'test'"),
    (_baseline_text({"recorded": 3}), None),  # informational: left out, not an error
    (_baseline_text(sample=HUGE), "end_to_end_tps"),
    (_baseline_text(sample="1e400"), "end_to_end_tps"),
    (_baseline_text(sample="NaN"), "NaN"),
    (_baseline_text(sample="-Infinity"), "Infinity"),
    (_baseline_text(sample='"fast"'), "sample 'fast' is not a number"),
    (_baseline_text(sample="1" * 5000), "invalid JSON"),
    (_baseline_text(sample="[1.0]"), "sample [1.0] is not a number"),
    (_baseline_text({"workload": "W"}).replace('"W"', NESTED), "nested"),
    (DEEP, "nested"),
])
def test_a_baseline_of_the_wrong_shape_is_named_in_one_line(tmp_path, text, field):
    path = tmp_path / "c" / "m.json"
    path.parent.mkdir()
    path.write_text(text)
    if field is None:
        assert baselines.read(path).cases["k"].recorded == []
        return
    with pytest.raises(baselines.BaselineError) as exc:
        baselines.read(path)
    message = str(exc.value)
    assert message.startswith(f"corrupt baseline {path}: ") and field in message, message
    assert "\n" not in message and "Nothing was overwritten" in message


@pytest.mark.parametrize("text", [DEEP, _baseline_text(machine=[1]), _baseline_text(sample=HUGE)])
def test_a_corrupt_baseline_is_never_rewritten(tmp_path, text):
    path = tmp_path / "c" / "m.json"
    path.parent.mkdir()
    path.write_text(text)
    case = baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [[1.0]]})
    with pytest.raises(baselines.BaselineError, match="corrupt baseline"):
        baselines.update(path, model="m", chip="c", machine={"key": "c"}, cases={"k": case})
    assert path.read_text() == text


def test_a_baseline_is_never_written_with_nan(tmp_path):
    path = tmp_path / "c" / "m.json"
    case = baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [[float("nan"), 1.0]]})
    with pytest.raises(baselines.BaselineError) as exc:
        baselines.update(path, model="m", chip="c", machine={"key": "c"}, cases={"k": case})
    assert str(path) in str(exc.value) and "not finite" in str(exc.value)
    assert not path.exists()


# -- history ------------------------------------------------------------------------------------

def _record(name: str, **changes) -> dict:
    case = {"model": "m", "case_key": "k", "resolution": "224x224", "outcome": "passed",
            "medians": {"end_to_end_tps": 10.0}, "samples": {"end_to_end_tps": [10.0, 10.5]}}
    case.update(changes.pop("case", {}))
    for key in changes.pop("drop", ()):
        case.pop(key)
    return {"schema_version": 1, "date": f"2026-01-0{name[-1]}T00:00:00+00:00", "commit": name,
            "branch": "main", "machine": {"key": "chip"}, "settings": {}, "cases": [case], **changes}


BAD_HISTORY_LINES = [  # (line, what the problem names)
    (json.dumps(_record("c2", machine=["chip"])), "'machine'"),
    (json.dumps(_record("c2", drop=["model"])), "cases[0]: missing field 'model'"),
    (json.dumps(_record("c2", case={"model": ["m"]})), "cases[0].model"),
    (json.dumps(_record("c2", case={"samples": {"end_to_end_tps": "fast"}})), "cases[0].samples.end_to_end_tps"),
    (json.dumps(_record("c2", case={"samples": {"end_to_end_tps": [1.0, "x"]}})), "cases[0].samples.end_to_end_tps"),
    (json.dumps(_record("c2", case={"samples": [1.0]})), "cases[0].samples"),
    (json.dumps(_record("c2", case={"samples": {"end_to_end_tps": ["S"]}})).replace('"S"', "1e400"),
     "cases[0].samples.end_to_end_tps"),
    (json.dumps(_record("c2", case={"medians": {"end_to_end_tps": "S"}})).replace('"S"', HUGE),
     "cases[0].medians.end_to_end_tps"),
    (json.dumps(_record("c2", case={"medians": {"end_to_end_tps": "S"}})).replace('"S"', "NaN"), "NaN"),
    (json.dumps(_record("c2", case={"medians": [10.0]})), "cases[0].medians"),
    (json.dumps(_record("c2", cases=[5])), "cases[0]"),
    (json.dumps(_record("c2", date=20260101)), "'date'"),
    (json.dumps(_record("c2", date=None)), "'date'"),
    (json.dumps(_record("c2", commit=["c2"])), "'commit'"),
    (json.dumps(_record("c2", machine={"key": 5})), "machine.key"),
    (DEEP, "nested"),
    ("[1, 2]", "not an object"),
]


def test_bad_history_lines_are_named_skipped_and_never_rewritten(tmp_path):
    path = tmp_path / "h.jsonl"
    lines = [json.dumps(_record("c1"))] + [line for line, _ in BAD_HISTORY_LINES] + [json.dumps(_record("c3"))]
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    read = history.read(path)
    assert [r["commit"] for r in read.records] == ["c1", "c3"]
    assert len(read.problems) == len(BAD_HISTORY_LINES)
    for number, (problem, (_, field)) in enumerate(zip(read.problems, BAD_HISTORY_LINES), 2):
        assert problem.startswith(f"{path}:{number}: ") and field in problem, problem
        assert problem.endswith("; skipped") and "\n" not in problem
    assert path.read_bytes() == before


def test_report_skips_a_bad_history_line_and_goes_on(tmp_path):
    path = tmp_path / "h.jsonl"
    lines = [json.dumps(_record("c1")), json.dumps(_record("c2", machine=["chip"])),
             json.dumps(_record("c3", drop=["model"])), DEEP, json.dumps(_record("c4", case={"medians": None}))]
    path.write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "report", str(path), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [
        f"pytest-mlxvlm: {path}:2: 'machine' is a list, not an object; skipped",
        f"pytest-mlxvlm: {path}:3: cases[0]: missing field 'model'; skipped",
        f"pytest-mlxvlm: {path}:4: nested too deeply (more than 64 levels); skipped",
    ]
    assert "| chip | m | `k` | Speed | 1 |" in (tmp_path / "r" / "report.md").read_text()


def test_report_into_a_path_that_cannot_be_written(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_record("c1")) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = _cli(capsys, "report", str(path), "--out", str(blocker))
    assert code == 2
    assert str(blocker) in _one_line_error(err, "pytest-mlxvlm: cannot write the report")
    code, _, err = _cli(capsys, "report", str(tmp_path))  # a directory
    assert code == 2 and str(tmp_path) in _one_line_error(err, "pytest-mlxvlm: cannot read")


# -- --mlx-json reports: merge and compare ------------------------------------------------------

def _report_text(result: dict | None = None, **top) -> str:
    doc = {"schema_version": 1, "machine": {"key": "chip"}, "settings": {}, "load_times_s": {"m": 1.0},
           "results": [{"model": "m", "resolution": "224x224", "case_key": "k", "test_id": "t::k",
                        "workload": {}, "samples": [SAMPLE, SAMPLE], **(result or {})}], **top}
    return json.dumps(doc)


BAD_REPORTS = [  # (content, what the message names); each is rejected by merge and compare
    ('"a string"', "the top level is a string"),
    ("[1, 2]", "the top level is a list"),
    (json.dumps({"schema_version": 1, "machine": {"key": "chip"}}), "missing field 'results'"),
    (_report_text(results={"m": 1}), "'results' is an object, not a list"),
    (_report_text(results=[5]), "results[0] is"),
    (_report_text({"samples": []}), "results[0].samples: empty"),
    (_report_text({"samples": "fast"}), "results[0].samples"),
    (_report_text({"samples": [{**SAMPLE, "end_to_end_tps": "fast"}]}), "results[0].samples[0].end_to_end_tps"),
    (_report_text({"samples": [{**SAMPLE, "end_to_end_tps": "S"}]}).replace('"S"', HUGE),
     "results[0].samples[0].end_to_end_tps"),
    (_report_text({"samples": [{k: v for k, v in SAMPLE.items() if k != "ttft_s"}]}),
     "results[0].samples[0]: missing field 'ttft_s'"),
    (_report_text({"model": ["m"]}), "results[0].model"),
    (_report_text({"resolution": None, "case_key": None}), "results[0]"),
    (_report_text(machine=["chip"]), "'machine'"),
    (_report_text(machine={"key": 5}), "machine.key"),
    (DEEP, "nested too deeply"),
    ("{broken", "invalid JSON"),
]


@pytest.mark.parametrize("content, field", BAD_REPORTS + [
    (_report_text(load_times_s=[1]), "'load_times_s'"),
    (_report_text(load_times_s={"m": "slow"}), "load_times_s.m"),
    (_report_text(settings="quick"), "'settings'"),
    (_report_text({"workload": "w"}), "results[0].workload"),
    (_report_text({"warmup_samples": [5]}), "results[0].warmup_samples[0]"),
    (_report_text({"bandwidth": {"gbps": "fast"}}), "results[0].bandwidth"),
    (_report_text({"comparison": "ok"}), "results[0].comparison"),
    (_report_text({"samples": [{k: v for k, v in SAMPLE.items() if k != "cached_tokens"}]}),
     "results[0].samples[0]: missing field 'cached_tokens'"),
])
def test_merge_names_the_report_and_the_field(tmp_path, capsys, content, field):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(merge.MergeError) as exc:
        merge.load(path)
    assert str(path) in str(exc.value) and field in str(exc.value) and "\n" not in str(exc.value)
    code, out, err = _cli(capsys, "merge", str(path), "--out", str(tmp_path / "m.md"))
    line = _one_line_error(err, "pytest-mlxvlm: cannot merge: ")
    assert code == 2 and str(path) in line and field in line
    assert not (tmp_path / "m.md").exists()


@pytest.mark.parametrize("content, field", BAD_REPORTS)
def test_compare_names_the_report_and_the_field(tmp_path, capsys, content, field):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(_report_text())
    bad.write_text(content)
    for args in ([str(good), str(bad)], [str(bad), str(good)]):
        code, out, err = _cli(capsys, "compare", *args)
        assert code == 2 and field in _one_line_error(err, f"pytest-mlxvlm: cannot compare: {bad}")


def test_compare_reads_reports_without_a_schema_version(tmp_path, capsys):
    """As the report command's test writes them from history lines: no schema_version."""
    good = tmp_path / "good.json"
    doc = json.loads(_report_text({"samples": [SAMPLE] * 5}))  # 5 vs 5 rounds: enough to decide
    good.write_text(json.dumps({k: v for k, v in doc.items() if k != "schema_version"}))
    code, out, _ = _cli(capsys, "compare", str(good), str(good))
    assert code == 0 and "0 regressed" in out


@pytest.mark.parametrize("args, field", [
    (["--alpha", "2"], "--alpha"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
    (["--alpha", "x"], "--alpha"),
    (["--tolerance", "garbage"], "bad tolerance 'garbage'"),
    (["--tolerance", "ttft_s=lots"], "bad tolerance 'ttft_s=lots'"),
    (["--tolerance", "ttft_s=nan"], "bad tolerance 'ttft_s=nan'"),
])
def test_compare_options_out_of_range(tmp_path, capsys, args, field):
    good = tmp_path / "good.json"
    good.write_text(_report_text())
    code, _, err = _cli(capsys, "compare", str(good), str(good), *args)
    assert code == 2 and field in _one_line_error(err, "pytest-mlxvlm: ")


def test_compare_of_unreadable_files(tmp_path, capsys):
    good, binary = tmp_path / "good.json", tmp_path / "binary.json"
    good.write_text(_report_text())
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    for other in (tmp_path / "missing.json", tmp_path, binary):
        code, _, err = _cli(capsys, "compare", str(good), str(other))
        assert code == 2 and str(other) in _one_line_error(err, "pytest-mlxvlm: cannot compare: ")


# -- import-vllm-mlx and import-reference ------------------------------------------------------

def _bench(**row) -> dict:
    return {"type": "mllm_image", "model": "mlx-community/Qwen3-VL-4B-Instruct-3bit", "test_image": "x.jpg",
            "results": [{"resolution": "224x224", "width": 224, "height": 224, "time_seconds": 1.5,
                         "tokens_generated": 90, "tokens_per_second": 60.0, **row}]}


@pytest.mark.parametrize("content, field", [
    (json.dumps(_bench(tokens_per_second="S")).replace('"S"', "NaN"), "NaN"),
    (json.dumps(_bench(time_seconds="S")).replace('"S"', "Infinity"), "Infinity"),
    (json.dumps(_bench(tokens_per_second="S")).replace('"S"', "1e400"), "results[0].tokens_per_second"),
    (json.dumps(_bench(tokens_per_second="S")).replace('"S"', HUGE), "results[0].tokens_per_second"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
    (b"\x00\x01binary\x02", "invalid JSON"),
    (json.dumps([_bench()]), "the top level is a list"),
    (json.dumps(_bench(width="224")), "results[0].width"),
    (json.dumps(_bench(height=True)), "results[0].height"),
    (json.dumps(_bench(width=0)), "results[0].width"),
    (json.dumps(_bench(width=224.5)), "results[0].width"),
    (json.dumps(_bench(tokens_per_second="60")), "results[0].tokens_per_second"),
    (json.dumps(_bench(tokens_per_second=0)), "results[0].tokens_per_second"),
    (json.dumps(_bench(tokens_generated="many")), "results[0].tokens_generated"),
    (json.dumps(_bench(time_seconds=-1)), "results[0].time_seconds"),
    (json.dumps({**_bench(), "results": {"224": 1}}), "'results'"),
    (json.dumps({**_bench(), "results": [3]}), "results[0]"),
    (json.dumps({**_bench(), "model": 5}), "'model'"),
    (json.dumps({**_bench(), "test_image": ["a"]}), "'test_image'"),
    (DEEP, "nested too deeply"),
])
def test_import_vllm_mlx_rejects_bad_input_and_writes_nothing(tmp_path, capsys, content, field):
    path = tmp_path / "bench.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "baselines"
    code, _, err = _cli(capsys, "import-vllm-mlx", str(path), "--chip", "Apple M2 Ultra", "--memory-gb", "192",
                        "--baseline-dir", str(out))
    assert code == 2 and field in _one_line_error(err, f"pytest-mlxvlm: cannot import {path}: ")
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize("option, field", [
    (["--tolerance", "nan"], "--tolerance"),
    (["--tolerance", "-5"], "--tolerance"),
    (["--tolerance", "x"], "--tolerance"),
    (["--memory-gb", "0"], "--memory-gb"),
])
def test_import_options_out_of_range_write_nothing(tmp_path, capsys, option, field):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_bench()))
    out = tmp_path / "baselines"
    args = {"--chip": "Apple M2 Ultra", "--memory-gb": "192", "--baseline-dir": str(out)}
    args[option[0]] = option[1]
    code, _, err = _cli(capsys, "import-vllm-mlx", str(path), *[x for kv in args.items() for x in kv])
    assert code == 2 and field in _one_line_error(err, "pytest-mlxvlm: ")
    assert not out.exists()


def test_an_imported_reference_reads_back(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_bench(tokens_generated=None, time_seconds=None)))
    code, _, err = _cli(capsys, "import-vllm-mlx", str(path), "--chip", "Apple M2 Ultra", "--memory-gb", "192",
                        "--baseline-dir", str(tmp_path / "b"))
    assert code == 0, err
    (made,) = (tmp_path / "b").rglob("*.json")
    assert baselines.read(made).kind == "reference"


@pytest.mark.parametrize("doc, field", [
    ([], "the top level is a list"),
    ({"runs": {"a": 1}}, "'runs'"),
    ({"runs": [{"chip": 5, "model": "m", "results": []}]}, "runs[0].chip"),
    ({"runs": [{"chip": "Apple M1", "memory_gb": "8", "model": "m", "results": []}]}, "runs[0].memory_gb"),
    ({"runs": [{"chip": "Apple M1", "memory_gb": 8, "model": "m",
                "results": [{"width": 224, "height": 224, "tok_per_s": "9"}]}]}, "runs[0].results[0].tok_per_s"),
])
def test_import_reference_rejects_bad_input(tmp_path, capsys, doc, field):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "baselines"
    code, _, err = _cli(capsys, "import-reference", str(path), "--baseline-dir", str(out))
    assert code == 2 and field in _one_line_error(err, f"pytest-mlxvlm: cannot import {path}: ")
    assert not out.exists()


# -- the command in its own process: exit 2, one line, no traceback -----------------------------

@pytest.mark.parametrize("make, command", [
    (lambda d: (d / "list.json").write_text("[]"), ["compare", "list.json", "good.json"]),
    (lambda d: (d / "deep.json").write_text(DEEP), ["compare", "good.json", "deep.json"]),
    (lambda d: None, ["compare", "good.json", "good.json", "--alpha", "2"]),
    (lambda d: None, ["compare", "good.json", "good.json", "--tolerance", "garbage"]),
    (lambda d: (d / "empty.json").write_text(_report_text({"samples": []})), ["merge", "empty.json"]),
    (lambda d: (d / "s.json").write_text('"a string"'), ["merge", "s.json"]),
    (lambda d: (d / "bin.json").write_bytes(b"\x00\xff\xfe garbage"),
     ["import-vllm-mlx", "bin.json", "--chip", "M1", "--memory-gb", "8", "--baseline-dir", "b"]),
    (lambda d: (d / "nan.json").write_text(json.dumps(_bench(tokens_per_second="S")).replace('"S"', "NaN")),
     ["import-vllm-mlx", "nan.json", "--chip", "M1", "--memory-gb", "8", "--baseline-dir", "b"]),
    (lambda d: None, ["report", "missing.jsonl"]),
])
def test_the_command_exits_2_in_one_line(tmp_path, make, command):
    (tmp_path / "good.json").write_text(_report_text())
    make(tmp_path)
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", *command], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    _one_line_error(run.stderr, "pytest-mlxvlm: ")
    assert not (tmp_path / "b").exists()


# -- model folders ------------------------------------------------------------------------------

def test_a_model_folder_without_safetensors_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    with pytest.raises(ModelLoadError) as exc:
        models.load(str(tmp_path))
    assert str(exc.value) == (f"model {str(tmp_path)!r}: no *.safetensors weights in {tmp_path} "
                              "(a checkpoint folder holds config.json and the *.safetensors weights)")


@pytest.mark.parametrize("config", ["{}", "[]"])
def test_a_config_that_is_empty_or_a_list_is_named(tmp_path, config):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ModelLoadError) as exc:
        models.load(str(tmp_path))
    assert f"{tmp_path / 'config.json'} has no 'model_type'" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text, message", [
    ('{"a": "open', "invalid JSON (Unterminated string starting at: line 1 column 7)"),
    ('{"a": }', "invalid JSON (Expecting value at line 1 column 7)"),
])
def test_a_json_error_says_where_in_plain_words(text, message):
    from pytest_mlxvlm.common.validate import loads

    with pytest.raises(ValueError) as caught:
        loads(text)
    assert str(caught.value) == message
