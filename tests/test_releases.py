"""benchmarks/releases.py at a small scale: release order, the one-line skip report, resume
markers, the history in release order. Nothing is installed: environments are stand-ins."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from benchmarks import release_envs, releases
from benchmarks.releases import Pair

MLX = releases.campaign_pairs("vlm")[0][0].mlx  # the mlx of the mlx-vlm campaign (a label here)

OLD_VLM_OUTPUT = """Traceback (most recent call last):
  File "site-packages/mlx_vlm/utils.py", line 772, in get_model_and_args
ValueError: Model type qwen3_vl not supported. Error: No module named 'mlx_vlm.models.qwen3_vl'
"""
PLUGIN_OUTPUT = """E   pytest_mlxvlm.models.loading.ModelLoadError: model 'synthetic:tiny': model type 'qwen3_vl' is not \
supported by mlx-vlm (Model type qwen3_vl not supported.)
1 error in 2.31s
"""


def test_releases_sort_by_number_not_text() -> None:
    pairs = releases.release_order([Pair(MLX, v) for v in ("0.7.10", "0.7.9", "0.7.2", "0.7.0")], "mlxvlm")
    assert [p.mlxvlm for p in pairs] == ["0.7.0", "0.7.2", "0.7.9", "0.7.10"]
    mlx = releases.release_order([Pair(m, "0.7.0") for m in ("0.32.0", "0.31.2", "0.32.10")], "mlx")
    assert [p.mlx for p in mlx] == ["0.31.2", "0.32.0", "0.32.10"]


def test_campaigns_hold_the_published_releases_in_order() -> None:
    vlm, varying = releases.campaign_pairs("vlm")
    assert varying == "mlxvlm"
    assert [p.mlxvlm for p in vlm][:2] == ["0.7.0", "0.7.1"] and vlm[-1].mlxvlm == "0.7.10"
    assert "0.7.7" not in {p.mlxvlm for p in vlm}  # never published
    mlx, _ = releases.campaign_pairs("mlx")
    assert [p.forced for p in mlx][:3] == [True, True, True] and not mlx[-1].forced
    assert len({p.key for p in vlm + mlx}) == len(vlm) + len(mlx) - 1  # 0.32.4-0.7.0 is in both


@pytest.mark.parametrize("bad", ["0.7", "v0.7.1", "0.7.1rc1", ""])
def test_bad_versions_say_what_to_write(bad: str) -> None:
    if bad == "0.7":
        assert releases.version_key(bad) == (0, 7)
        return
    with pytest.raises(ValueError, match="digits and dots"):
        releases.version_key(bad)


@pytest.mark.parametrize("output", [OLD_VLM_OUTPUT, PLUGIN_OUTPUT])
def test_a_release_without_the_model_type_is_one_line(output: str) -> None:
    line = releases.skip_line(Pair(MLX, "0.7.2"), "images", release_envs.one_line_reason(output))
    assert line == f"mlx-vlm 0.7.2 (mlx {MLX}): images: no qwen3_vl model type; skipped"


def test_other_failures_are_their_last_error_line() -> None:
    output = "Traceback (most recent call last):\n  File x\nImportError: cannot import name 'APCManager'\n"
    assert release_envs.one_line_reason(output) == "ImportError: cannot import name 'APCManager'"
    assert release_envs.one_line_reason("") == "no output"


def fake_env(work: Path, pair: Pair, script: str) -> None:
    """A stand-in interpreter for a pair's env: a shell script that prints and exits."""
    python = release_envs.env_python(work, pair)
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n" + script)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)


def test_measure_reports_a_missing_model_type_in_one_line(tmp_path: Path, capsys) -> None:
    pair = Pair(MLX, "0.7.2")
    fake_env(tmp_path / "work", pair, f"cat <<'EOF'\n{OLD_VLM_OUTPUT}EOF\nexit 1\n")
    marker = releases.measure(tmp_path / "work", tmp_path / "out", pair, "images", "x", 3, 32, None, "tree")
    assert marker["status"] == "skipped" and marker["reason"] == "no qwen3_vl model type"
    assert capsys.readouterr().out == f"mlx-vlm 0.7.2 (mlx {MLX}): images: no qwen3_vl model type; skipped\n"
    assert releases.read_marker(tmp_path / "out", pair, "images") == marker


def test_a_finished_step_is_not_run_again(tmp_path: Path, monkeypatch, capsys) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(releases, "plugin_rev", lambda rev="HEAD": ("c0ffee", "tree-1"))
    monkeypatch.setattr(releases, "install", lambda work, out, pair, commit, tree: (
        calls.append((pair.key, "install")), {"pip_check": ""})[1])

    def measure(work, out, pair, step, label, rounds, max_tokens, lock, tree):
        calls.append((pair.key, step))
        status = "skipped" if pair.mlxvlm == "0.7.2" else "measured"
        return releases.write_marker(out, pair, step, status, seconds=0.0, plugin_tree=tree,
                                     reason="no qwen3_vl model type" if status == "skipped" else "")

    monkeypatch.setattr(releases, "measure", measure)
    out = tmp_path / "out"
    skipped = releases.run_campaign("vlm", tmp_path / "work", out, ["install", "images"], 3, 32, None)
    assert [k for k, step in calls if step == "images"] == [p.key for p in releases.campaign_pairs("vlm")[0]]
    assert skipped == [f"mlx-vlm 0.7.2 (mlx {MLX}): images: no qwen3_vl model type; skipped"]
    assert (out / "skipped.txt").read_text() == skipped[0] + "\n"
    calls.clear()
    assert releases.run_campaign("vlm", tmp_path / "work", out, ["install", "images"], 3, 32, None) == skipped
    assert calls == []  # every (env, step) has its marker
    corrupt = releases.marker_path(out, Pair(MLX, "0.7.5"), "images")
    corrupt.write_text("{not json")
    releases.run_campaign("vlm", tmp_path / "work", out, ["install", "images"], 3, 32, None)
    assert calls == [(f"{MLX}-0.7.5", "install"), (f"{MLX}-0.7.5", "images")]
    assert "corrupt marker" in capsys.readouterr().err
    calls.clear()  # another plugin: every marker is stale, every step runs again
    monkeypatch.setattr(releases, "plugin_rev", lambda rev="HEAD": ("beef", "tree-2"))
    releases.run_campaign("vlm", tmp_path / "work", out, ["images"], 3, 32, None, plugin="beef")
    assert len([c for c in calls if c[1] == "images"]) == len(releases.campaign_pairs("vlm")[0])


def test_the_history_is_in_release_order_whenever_it_ran(tmp_path: Path) -> None:
    pairs = [Pair(MLX, v) for v in ("0.7.0", "0.7.1", "0.7.2")]
    ran = {"0.7.0": "2026-01-02T00:00:00+00:00", "0.7.1": "2026-01-01T00:00:00+00:00"}  # 0.7.1 ran first
    for pair in pairs[:2]:
        folder = tmp_path / "envs" / pair.key
        folder.mkdir(parents=True)
        (folder / "session-images.jsonl").write_text(json.dumps({"date": ran[pair.mlxvlm], "commit": "x"}) + "\n")
    history = releases.build_history(tmp_path, pairs, "mlxvlm")
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["commit"] for r in records] == [f"0.7.0+mlx{MLX}", f"0.7.1+mlx{MLX}"]
    assert records[0]["date"] < records[1]["date"]
    assert [r["measured"] for r in records] == [ran["0.7.0"], ran["0.7.1"]]


def test_resolution_of_a_case() -> None:
    assert releases.resolution_of("pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[448x448]") == "448x448"
    assert releases.resolution_of("pytest_mlxvlm.builtin.test_mlxvlm_cache::test_cache_basic[apc]") is None


def test_a_cache_step_that_measured_is_measured(tmp_path: Path, monkeypatch) -> None:
    """Failed cache expectations are outcomes, not a skip; a marker saying otherwise is corrected."""
    pair = releases.campaign_pairs("vlm")[0][0]
    folder = tmp_path / "envs" / pair.key
    folder.mkdir(parents=True)
    (folder / "cache.json").write_text(json.dumps({"results": [], "cache": [{"engine": "apc", "steps": [{}]}]}))
    assert releases.has_measurements(folder / "cache.json")
    assert not releases.has_measurements(folder / "images.json")
    releases.write_marker(tmp_path, pair, "cache", "skipped", reason="16 failed, 11 passed", plugin_tree="t")
    monkeypatch.setattr(releases, "plugin_rev", lambda rev="HEAD": ("c", "t"))
    monkeypatch.setattr(releases, "measure", lambda *a: pytest.fail("a finished step ran again"))
    releases.run_campaign("vlm", tmp_path / "work", tmp_path, [], 3, 32, None)
    assert releases.read_marker(tmp_path, pair, "cache")["status"] == "measured"


def test_a_change_point_names_the_two_neighbouring_releases(tmp_path: Path) -> None:
    """The recorded demo history (slowdown from its 8th session on) as ten releases' sessions."""
    records = (Path(__file__).parent / "data" / "history-demo.jsonl").read_text().splitlines()[:10]
    pairs, varying = releases.campaign_pairs("vlm")
    for pair, record in zip(pairs, records):
        folder = tmp_path / "envs" / pair.key
        folder.mkdir(parents=True)
        (folder / "session-images.jsonl").write_text(record + "\n")
    points = releases.change_points(releases.build_history(tmp_path, pairs, varying))
    assert points and {(cp["before"], cp["after"]) for cp in points} == {(pairs[6].label(varying), pairs[7].label(varying))}
    assert all(cp["regression"] for cp in points)
