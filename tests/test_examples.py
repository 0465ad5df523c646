"""The example workflows stay true: valid YAML, and every option and command they use exists."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from pytest_mlxvlm.cli import main

WORKFLOWS = sorted((Path(__file__).parents[1] / "examples" / "workflows").glob("*.yml"))


def _runs(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    return [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step]


@pytest.fixture(scope="module")
def plugin_help(pytestconfig) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    return out.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_uses_only_existing_options_and_commands(path, plugin_help, capsys):
    runs = _runs(path)
    assert runs, f"{path.name} runs nothing"
    text = " ".join(runs)
    for flag in set(re.findall(r"--mlx-[a-z-]+", text)) | ({"--quick"} & set(text.split())):
        assert f"{flag}" in plugin_help, f"{path.name} uses {flag}, which the plugin does not have"
    for command in re.findall(r"pytest-mlxvlm ([a-z-]+)", text):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0, f"{path.name} runs 'pytest-mlxvlm {command}', which does not exist"
    for run in runs:  # shell-parsable
        for line in run.replace("\\\n", " ").splitlines():
            shlex.split(line.replace("${{", "").replace("}}", ""))


def test_nightly_has_a_chip_matrix_history_and_a_failing_exit():
    path = next(p for p in WORKFLOWS if p.stem == "nightly")
    doc = yaml.safe_load(path.read_text())
    assert len(doc["jobs"]["sweep"]["strategy"]["matrix"]["include"]) >= 2
    text = path.read_text()
    assert "--mlx-history" in text and "pytest-mlxvlm report" in text and "pytest-mlxvlm merge" in text
    assert "exit 1" in text


def test_the_pull_request_gate_uses_the_paired_mode_against_the_merge_base():
    path = next(p for p in WORKFLOWS if p.stem == "pr-gate")
    text = " ".join(_runs(path))
    assert '--mlx-ab-base "$BASE"' in text and "git merge-base" in text
    assert "fetch-depth: 0" in path.read_text()
