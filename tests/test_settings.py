"""Settings: resolution parsing, precedence, marker overrides."""

import pytest

from pytest_mlxvlm.config.settings import (
    FULL_SWEEP,
    QUICK_SWEEP,
    Resolution,
    Settings,
    SettingsError,
    parse_resolution,
    parse_resolutions,
)


def test_sweeps_are_the_published_sizes():
    assert [r.id for r in FULL_SWEEP] == [
        "224x224", "336x336", "448x448", "512x512", "672x672", "768x768", "896x896",
        "1024x1024", "1280x720", "1920x1080",
    ]
    assert [r.id for r in QUICK_SWEEP] == ["224x224", "448x448", "768x768", "1024x1024"]


@pytest.mark.parametrize(
    "text, expected",
    [("448x448", (448, 448)), (" 1920X1080 ", (1920, 1080)), ("512", (512, 512)),
     ("1280×720", (1280, 720)), ("224²", (224, 224))],
)
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == Resolution(*expected)


@pytest.mark.parametrize("text", ["0x5", "abc", "5x0", "-3x4", "448x", "99999x10", "", "²", "2²2", "٢٢٤"])
def test_bad_resolution_says_what_to_write(text):
    with pytest.raises(SettingsError, match="bad resolution|no resolution"):
        parse_resolutions(text)


def test_resolution_list_keeps_order_and_drops_repeats():
    assert [r.id for r in parse_resolutions("1024x1024, 224x224 224x224")] == [
        "1024x1024", "224x224",
    ]


def test_marker_overrides():
    s = Settings().for_marker(rounds=2, max_tokens=8, resolutions=["224x224", (336, 336)],
                              tolerance={"ttft_s": 20})
    assert (s.workload.rounds, s.workload.max_tokens) == (2, 8)
    assert [r.id for r in s.workload.resolutions] == ["224x224", "336x336"]
    assert s.gate.tolerances["ttft_s"] == 0.2
    with pytest.raises(SettingsError, match="unknown keyword"):
        Settings().for_marker(round=2)
    # None, as the marker's registered signature shows it, is the session's setting
    assert Settings().for_marker(resolutions=None, tolerance=None, prompt=None, rounds=None) == Settings()
    with pytest.raises(SettingsError, match="resolutions: give 'WxH' or a list of them"):
        Settings().for_marker(resolutions=448)
    with pytest.raises(SettingsError, match="tolerance: give 'METRIC=PCT'"):
        Settings().for_marker(tolerance=5)
