"""Settings: resolution parsing, precedence, marker overrides."""

from pathlib import Path

import pytest

from pytest_mlxvlm.settings import (
    FULL_SWEEP,
    QUICK_SWEEP,
    Resolution,
    Settings,
    SettingsError,
    parse_resolution,
    parse_resolutions,
    resolve,
)


def _resolve(tmp_path: Path, **kw):
    args = dict(
        models=None, ini_models=None, quick=None, ini_quick=False, resolutions=None,
        ini_resolutions=None, max_tokens=None, rounds=None, warmup=None, prompt=None,
        image=None, json_path=None, chip=None, suite="auto", base_dir=tmp_path,
    )
    args.update(kw)
    return resolve(**args)


def test_sweeps_are_the_published_sizes():
    assert [r.id for r in FULL_SWEEP] == [
        "224x224", "336x336", "448x448", "512x512", "672x672", "768x768", "896x896",
        "1024x1024", "1280x720", "1920x1080",
    ]
    assert [r.id for r in QUICK_SWEEP] == ["224x224", "448x448", "768x768", "1024x1024"]


@pytest.mark.parametrize(
    "text, expected",
    [("448x448", (448, 448)), (" 1920X1080 ", (1920, 1080)), ("512", (512, 512)),
     ("1280×720", (1280, 720))],
)
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == Resolution(*expected)


@pytest.mark.parametrize("text", ["0x5", "abc", "5x0", "-3x4", "448x", "99999x10", ""])
def test_bad_resolution_says_what_to_write(text):
    with pytest.raises(SettingsError, match="bad resolution|no resolution"):
        parse_resolutions(text)


def test_resolution_list_keeps_order_and_drops_repeats():
    assert [r.id for r in parse_resolutions("1024x1024, 224x224 224x224")] == [
        "1024x1024", "224x224",
    ]


def test_defaults(tmp_path):
    s = _resolve(tmp_path)
    assert s.models == ("synthetic:tiny",)
    assert s.resolutions == FULL_SWEEP
    assert (s.max_tokens, s.rounds, s.warmup) == (64, 5, 1)
    assert s.suites == ()


def test_quick_and_explicit_resolutions(tmp_path):
    assert _resolve(tmp_path, quick=True).resolutions == QUICK_SWEEP
    assert _resolve(tmp_path, ini_quick=True).resolutions == QUICK_SWEEP
    s = _resolve(tmp_path, quick=True, resolutions="336x336")
    assert [r.id for r in s.resolutions] == ["336x336"]


def test_command_line_beats_ini(tmp_path):
    s = _resolve(tmp_path, models=["a/b"], ini_models=["c/d"], resolutions="224x224",
                 ini_resolutions="448x448")
    assert s.models == ("a/b",)
    assert [r.id for r in s.resolutions] == ["224x224"]
    assert _resolve(tmp_path, ini_models=["c/d"]).models == ("c/d",)


def test_suite_runs_when_a_model_is_named(tmp_path):
    assert _resolve(tmp_path, models=["synthetic:tiny"]).suites == ("images",)
    assert _resolve(tmp_path, models=["synthetic:tiny"], suite="off").suites == ()
    assert _resolve(tmp_path, suite="all").suites == ("images", "cache")
    assert _resolve(tmp_path, suite="cache").suites == ("cache",)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"max_tokens": "0"}, "--mlx-max-tokens must be at least 1"),
        ({"max_tokens": "-4"}, "--mlx-max-tokens must be at least 1"),
        ({"rounds": "x"}, "--mlx-rounds must be a whole number"),
        ({"warmup": "-1"}, "--mlx-warmup must be at least 0"),
        ({"image": "missing.png"}, "no such file"),
        ({"suite": "maybe"}, "unknown suite 'maybe'"),
    ],
)
def test_bad_values(tmp_path, kw, message):
    with pytest.raises(SettingsError, match=message):
        _resolve(tmp_path, **kw)


def test_warmup_zero_is_allowed(tmp_path):
    assert _resolve(tmp_path, warmup="0").warmup == 0


def test_marker_overrides():
    s = Settings().for_marker(rounds=2, max_tokens=8, resolutions=["224x224", (336, 336)])
    assert (s.rounds, s.max_tokens) == (2, 8)
    assert [r.id for r in s.resolutions] == ["224x224", "336x336"]
    with pytest.raises(SettingsError, match="unknown keyword"):
        Settings().for_marker(round=2)
