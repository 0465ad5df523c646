"""The serving benchmarks' settings (config/serving.py): rates, objectives, the soak, workload
files; and through pytest, the one-line errors of bad values."""

from __future__ import annotations

import json

import pytest

from pytest_mlxvlm.config.serving import (
    Resolution,
    builtin_workload,
    load_workload,
    parse_rates,
    parse_slo,
    parse_soak,
    rate_id,
    resolve_workloads,
    sweep_fractions,
)
from pytest_mlxvlm.config.settings import SettingsError


def test_rates_are_numbers_or_a_sweep():
    assert parse_rates("0.5, 1,2rps,1", "--r") == ((0.5, 1.0, 2.0), 0)
    assert parse_rates("sweep", "--r") == ((), 6) and parse_rates("sweep:4", "--r") == ((), 4)
    assert sweep_fractions(4) == (0.25, 0.5, 0.75, 1.0)
    assert rate_id(0.5) == "0.5rps" and rate_id(2.0) == "2rps"
    with pytest.raises(SettingsError, match=r"--r: bad rate '-1': requests per second above 0"):
        parse_rates("1,-1", "--r")


def test_objectives_are_milliseconds_by_name():
    assert parse_slo("ttft=500,itl=50", "--s") == {"ttft": 0.5, "itl": 0.05}
    assert parse_slo("e2e=2s tpot=40ms", "--s") == {"e2e": 2.0, "tpot": 0.04}
    with pytest.raises(SettingsError, match=r"bad objective 'ttfb=5': write NAME=MILLISECONDS with NAME one of "
                                            r"ttft, itl, tpot, e2e"):
        parse_slo("ttfb=5", "--s")


def test_a_soak_is_requests_or_seconds():
    assert parse_soak("500", "--k") == (500, None) and parse_soak("90s", "--k") == (0, 90.0)
    with pytest.raises(SettingsError, match="--k must be between 20 and"):
        parse_soak("5", "--k")


def test_a_workload_file_of_requests_and_sessions(tmp_path):
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"not read here")
    lines = [{"text": "Describe it.", "image": "448x448", "output_length": 32},
             {"prompt": "Two images.", "images": ["224x224", "cat.png"]},
             {"session_id": "s1", "turns": [{"text": "What is it?", "image": "https://x/y.png"},
                                            {"text": "And its colour?"}]}]
    path = tmp_path / "mix.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    work = load_workload(path)
    assert work.name == "mix" and work.requests == 4 and len(work.conversations) == 3
    first, second, session = work.conversations
    assert first.turns[0].images == (Resolution(448, 448),) and first.turns[0].max_tokens == 32
    assert second.turns[0].images == (Resolution(224, 224), str(picture)) and second.turns[0].max_tokens is None
    assert second.turns[0].describe_images() == "224x224+cat.png"
    assert session.multi_turn and session.session_id == "s1" and session.turns[1].images == ()


@pytest.mark.parametrize("line, message", [
    ("{not json", r"line 2: not JSON"),
    ('{"image": "448x448"}', r"line 2: a request needs \"text\""),
    ('{"text": "x", "image": "missing.png"}', r"line 2: image 'missing.png': no such file"),
    ('{"text": "x", "output_length": 0}', r"line 2: output_length must be between 1 and"),
    ('{"session_id": "a", "turns": []}', r"line 2: \"turns\" must be a non-empty list"),
])
def test_a_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "w.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(SettingsError, match=message):
        load_workload(path)


def test_built_in_workloads_mix_sizes_and_sessions(tmp_path):
    sizes = (Resolution(224, 224), Resolution(448, 448))
    mixed = builtin_workload("mixed", sizes, "Describe.")
    assert mixed.requests == 16 and {c.turns[0].images[0] for c in mixed.conversations} == set(sizes)
    assert len({c.turns[0].text for c in mixed.conversations}) == 2  # a short and a long prompt
    sessions = builtin_workload("multiturn", sizes, "Describe.")
    assert sessions.requests == 12 and all(len(c.turns) == 3 for c in sessions.conversations)
    found = resolve_workloads("mixed,multiturn", "--w", tmp_path, sizes, "Describe.")
    assert [w.name for w in found] == ["mixed", "multiturn"]
    with pytest.raises(SettingsError, match=r"--w 'nope.jsonl': no such file \(or a built-in workload: mixed, multiturn\)"):
        resolve_workloads("nope.jsonl", "--w", tmp_path, sizes, "Describe.")


@pytest.mark.parametrize("args, message", [
    (["--mlx-server-rates", "fast"], "--mlx-server-rates: bad rate 'fast'"),
    (["--mlx-server-slo", "ttft"], "--mlx-server-slo: bad objective 'ttft'"),
    (["--mlx-server-soak", "3"], "--mlx-server-soak must be between 20 and"),
    (["--mlx-server-soak", "10m"], "--mlx-server-soak: give a request count (e.g. 500) or seconds (e.g. 600s), "
                                   "got '10m'"),
    (["--mlx-server-requests", "4", "--mlx-server-duration", "5"],
     "--mlx-server-requests and --mlx-server-duration: give one of them"),
    (["--mlx-server-workload", "missing.jsonl"], "--mlx-server-workload 'missing.jsonl': no such file"),
    (["--mlx-server-leak-threshold", "0"], "--mlx-server-leak-threshold must be above 0"),
])
def test_bad_serving_settings_stop_the_run_in_one_line(pytester, args, message):
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
