"""harness/rootdir.py: an --mlx-* path value written with a space, which pytest reads as a test path."""

from __future__ import annotations

import pytest


def test_a_path_value_that_moves_pytests_rootdir_is_a_usage_error(pytester: pytest.Pytester,
                                                                   tmp_path_factory: pytest.TempPathFactory):
    """pytest reads ``--mlx-history /elsewhere/h.jsonl`` as a test path before the plugin is
    loaded: the rootdir and ini file move to ``/elsewhere``'s side. Said in one line, with the fix;
    a path inside the project and the '=' form are fine."""
    pytester.makeini("[pytest]\naddopts = -p no:benchmark\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "history.jsonl"
    elsewhere.write_text("")
    moved = pytester.runpytest("--mlx-history", str(elsewhere), "--co")
    assert moved.ret == pytest.ExitCode.USAGE_ERROR
    moved.stderr.fnmatch_lines([f"ERROR: pytest-mlxvlm: pytest set its rootdir (*, not {pytester.path}) and ini "
                                f"file (none, not {pytester.path / 'tox.ini'}) by the value in --mlx-history "
                                f"{elsewhere}: * Write --mlx-history={elsewhere} (with '=')"])
    (pytester.path / "history.jsonl").write_text("")
    for args in (["--mlx-history", "history.jsonl"], [f"--mlx-history={elsewhere}"]):
        result = pytester.runpytest(*args, "--co")
        assert result.ret == pytest.ExitCode.OK, args
        result.stdout.fnmatch_lines([f"rootdir: {pytester.path}", "configfile: tox.ini"])
