"""Resolving settings: command line over ini over defaults, errors naming the flag or ini key."""

from pathlib import Path

import pytest

from pytest_mlxvlm.config.settings import FULL_SWEEP, QUICK_SWEEP, SettingsError
from pytest_mlxvlm.harness.resolve import mapping_lookup, resolve


def _resolve(tmp_path: Path, cli=None, ini=None):
    """Settings from command-line and ini values (by ini name), command line first."""
    cli, ini = cli or {}, ini or {}
    from_cli, from_ini = mapping_lookup(cli), mapping_lookup(ini, source="ini")

    def lookup(name):
        value, where = from_cli(name)
        return (value, where) if value is not None else from_ini(name)

    return resolve(lookup, base_dir=tmp_path)


def test_defaults(tmp_path):
    w = _resolve(tmp_path).workload
    assert w.models == ("synthetic:tiny",)
    assert w.resolutions == FULL_SWEEP
    assert (w.max_tokens, w.rounds, w.warmup) == (64, 5, 1)
    assert w.suites == ()


def test_quick_and_explicit_resolutions(tmp_path):
    assert _resolve(tmp_path, {"mlx_quick": True}).workload.resolutions == QUICK_SWEEP
    assert _resolve(tmp_path, ini={"mlx_quick": True}).workload.resolutions == QUICK_SWEEP
    w = _resolve(tmp_path, {"mlx_quick": True, "mlx_resolutions": "336x336"}).workload
    assert [r.id for r in w.resolutions] == ["336x336"]


def test_command_line_beats_ini(tmp_path):
    w = _resolve(tmp_path, {"mlx_model": ["a/b"], "mlx_resolutions": "224x224"},
                 {"mlx_model": ["c/d"], "mlx_resolutions": "448x448"}).workload
    assert w.models == ("a/b",)
    assert [r.id for r in w.resolutions] == ["224x224"]
    assert _resolve(tmp_path, ini={"mlx_model": ["c/d"]}).workload.models == ("c/d",)


def test_suite_runs_when_a_model_is_named_on_the_command_line(tmp_path):
    assert _resolve(tmp_path, {"mlx_model": ["synthetic:tiny"]}).workload.suites == ("images",)
    assert _resolve(tmp_path, ini={"mlx_model": ["synthetic:tiny"]}).workload.suites == ()
    assert _resolve(tmp_path, {"mlx_model": ["synthetic:tiny"], "mlx_suite": "off"}).workload.suites == ()
    assert _resolve(tmp_path, {"mlx_suite": "all"}).workload.suites == ("images", "cache")
    assert _resolve(tmp_path, {"mlx_suite": "cache"}).workload.suites == ("cache",)


@pytest.mark.parametrize(
    "cli, message",
    [
        ({"mlx_max_tokens": "0"}, "--mlx-max-tokens must be between 1 and"),
        ({"mlx_max_tokens": "-4"}, "--mlx-max-tokens must be between 1 and"),
        ({"mlx_max_tokens": "99999999999999999999"}, "--mlx-max-tokens must be between 1 and"),
        ({"mlx_rounds": "x"}, "--mlx-rounds must be a whole number"),
        ({"mlx_warmup": "-1"}, "--mlx-warmup must be between 0 and"),
        ({"mlx_image": "missing.png"}, "no such file"),
        ({"mlx_image": "."}, r"--mlx-image '\.': a folder, not an image file; give one image"),
        ({"mlx_suite": "maybe"}, "unknown suite 'maybe'"),
        ({"mlx_alpha": "2"}, "--mlx-alpha must be above 0 and at most 0.5"),
    ],
)
def test_bad_values(tmp_path, cli, message):
    with pytest.raises(SettingsError, match=message):
        _resolve(tmp_path, cli)


@pytest.mark.parametrize(
    "ini, message",
    [
        ({"mlx_rounds": "0"}, "ini mlx_rounds must be between 1 and"),
        ({"mlx_resolutions": "0x5"}, "ini mlx_resolutions: bad resolution"),
        ({"mlx_tolerance": ["sped=5"]}, "ini mlx_tolerance: bad tolerance 'sped=5' .no metric is called"),
        ({"mlx_quick": "maybe"}, "ini mlx_quick must be true or false"),
        ({"mlx_ab_order": "random"}, "ini mlx_ab_order must be one of turns, duet, staggered"),
        ({"mlx_server_token_events": "bytes"}, "ini mlx_server_token_events 'bytes': choose content or chunks"),
    ],
)
def test_bad_ini_values_name_the_ini_key(tmp_path, ini, message):
    with pytest.raises(SettingsError, match=message):
        _resolve(tmp_path, ini=ini)


def test_empty_resolutions_on_the_command_line_are_refused(tmp_path):
    lookup = lambda name: ("", "--mlx-resolutions") if name == "mlx_resolutions" else (None, None)  # noqa: E731
    with pytest.raises(SettingsError, match="no resolution given"):
        resolve(lookup, base_dir=tmp_path)


def test_ab_defaults_to_the_barrier_order_and_the_median_estimator(tmp_path):
    """The defaults docs/ab.md's recordings chose; either can be set in the ini file."""
    plan = _resolve(tmp_path).ab
    assert (plan.order, plan.estimator) == ("barrier", "median")
    chosen = _resolve(tmp_path, ini={"mlx_ab_order": "turns", "mlx_ab_estimator": "fast"}).ab
    assert (chosen.order, chosen.estimator) == ("turns", "fast")


def test_one_syntax_for_counts_that_may_stop_early(tmp_path):
    """Rounds and A/B pairs read alike: N, or MIN:MAX; --mlx-case-budget is both one's time limit."""
    w = _resolve(tmp_path, {"mlx_rounds": "4:12", "mlx_case_budget": "60"}).workload
    assert (w.rounds, w.max_rounds, w.adaptive, w.case_budget_s) == (4, 12, True, 60.0)
    assert w.describe()["rounds"] == "4:12"
    w = _resolve(tmp_path, {"mlx_rounds": "7"}).workload
    assert (w.rounds, w.adaptive, w.describe()["rounds"]) == (7, False, 7)
    assert _resolve(tmp_path, {"mlx_rounds": "6:6"}).workload.adaptive is False
    ab = _resolve(tmp_path, {"mlx_ab_pairs": "10:30", "mlx_case_budget": "90"}).ab
    assert (ab.min_pairs, ab.max_pairs, ab.budget_s) == (10, 30, 90.0)
    assert _resolve(tmp_path, {"mlx_ab_pairs": "12"}).ab.max_pairs == 12
    defaults = _resolve(tmp_path)
    assert (defaults.workload.case_budget_s, defaults.ab.budget_s) == (120.0, 480.0)


def test_older_spellings_still_work(tmp_path):
    w = _resolve(tmp_path, {"mlx_rounds": "auto", "mlx_max_rounds": "8"}).workload
    assert (w.rounds, w.max_rounds, w.adaptive) == (5, 8, True)
    assert _resolve(tmp_path, {"mlx_rounds": "auto"}).workload.max_rounds == 30
    both = _resolve(tmp_path, {"mlx_ab_budget": "150", "mlx_case_budget": "60"})
    assert (both.ab.budget_s, both.workload.case_budget_s) == (150.0, 60.0)
    assert _resolve(tmp_path, ini={"mlx_ab_budget": "200"}).ab.budget_s == 200.0


@pytest.mark.parametrize("cli, message", [
    ({"mlx_rounds": "9:3"}, "--mlx-rounds must be between 9 and"),
    ({"mlx_ab_pairs": "1:5"}, "--mlx-ab-pairs must be between 2 and"),
    ({"mlx_progress": "soon"}, "--mlx-progress must be a number of seconds or off"),
])
def test_bad_counts_and_progress(tmp_path, cli, message):
    with pytest.raises(SettingsError, match=message):
        _resolve(tmp_path, cli)


def test_progress_interval(tmp_path):
    assert _resolve(tmp_path).outputs.progress_s == 10.0
    assert _resolve(tmp_path, {"mlx_progress": "0"}).outputs.progress_s == 0.0
    assert _resolve(tmp_path, {"mlx_progress": "off"}).outputs.progress_s is None


def test_warmup_zero_is_allowed(tmp_path):
    assert _resolve(tmp_path, {"mlx_warmup": "0"}).workload.warmup == 0


def test_every_option_is_named_by_the_flag_its_setting_derives(pytestconfig):
    from pytest_mlxvlm.harness.resolve import flag

    options = [o for g in pytestconfig._parser._groups for o in g.options
               if str(o.dest).startswith("mlx_")]
    assert len(options) > 40
    for option in options:
        assert flag(option.dest) in option.names(), option.names()
