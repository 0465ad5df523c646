"""The example workflows stay true: valid YAML, every option and command they use exists, the
linters CI runs find nothing, and the nightly's history steps work in a scratch repository."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_mlxvlm.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
ALL_WORKFLOWS = sorted([*WORKFLOWS, *(ROOT / ".github" / "workflows").glob("*.yml")])
BIN = Path(sys.executable).parent


def _steps(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def _runs(path: Path) -> list[str]:
    return [step["run"] for step in _steps(path) if "run" in step]


def _pytest_args(path: Path) -> list[str]:
    return [step["with"]["pytest-args"] for step in _steps(path) if "pytest-args" in step.get("with", {})]


@pytest.fixture(scope="module")
def plugin_help(pytestconfig) -> str:
    out = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    return out.stdout


def _command_help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0, f"'pytest-mlxvlm {command}' does not exist"
    return capsys.readouterr().out


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_uses_only_existing_options_and_commands(path, plugin_help, capsys):
    runs = _runs(path)
    text = " ".join(runs + _pytest_args(path))
    assert text.strip(), f"{path.name} runs nothing"
    for flag in set(re.findall(r"--mlx-[a-z-]+", text)) | ({"--quick"} & set(text.split())):
        assert f"{flag}" in plugin_help, f"{path.name} uses {flag}, which the plugin does not have"
    for run in runs:
        joined = run.replace("\\\n", " ")
        for command, rest in re.findall(r"pytest-mlxvlm ([a-z-]+)([^\n|;&]*)", joined):
            known = _command_help(command, capsys)
            for flag in re.findall(r"\s(--[a-z-]+)", rest):
                assert flag in known, f"{path.name}: 'pytest-mlxvlm {command}' has no {flag}"
        for line in joined.splitlines():  # shell-parsable
            shlex.split(line.replace("${{", "").replace("}}", ""))


def test_nightly_has_a_matrix_a_history_and_a_failing_exit():
    path = ROOT / "examples" / "workflows" / "nightly.yml"
    doc = yaml.safe_load(path.read_text())
    assert len(doc["jobs"]["sweep"]["strategy"]["matrix"]["include"]) >= 2
    (sweep,) = [s for s in doc["jobs"]["sweep"]["steps"] if "pytest-mlxvlm@" in s.get("uses", "")]
    assert sweep["with"]["history"].startswith("session-")
    history = doc["jobs"]["history"]
    assert history["permissions"] == {"contents": "write"}
    (install,) = [s for s in history["steps"] if "pytest-mlxvlm@" in s.get("uses", "")]
    assert install["with"] == {"install-only": "true"}  # the project is installed before merge and report
    text = path.read_text()
    assert "pytest-mlxvlm report" in text and "pytest-mlxvlm merge" in text and "exit 1" in text


def test_the_self_hosted_pull_request_gate_uses_the_action_against_the_merge_base():
    path = ROOT / "examples" / "workflows" / "pr-gate.yml"
    doc = yaml.safe_load(path.read_text())
    assert doc["permissions"]["pull-requests"] == "write"
    (step,) = [s for s in _steps(path) if "pytest-mlxvlm@" in s.get("uses", "")]
    assert "base" not in step["with"]  # auto: the merge base
    assert "git merge-base" in (ROOT / "action" / "base.sh").read_text()
    assert "fetch-depth: 0" in path.read_text()


# --- the nightly's history steps, run as written in a scratch repository ------------------------

FAKE_REPORT = """#!/usr/bin/env bash
# stands in for pytest-mlxvlm: report writes a deterministic site from the history it reads
if [ "$1" = report ]; then
  history=$2; shift 2
  while [ $# -gt 0 ]; do case "$1" in --out) out=$2 ;; --base-url) base=$2 ;; esac; shift; done
  mkdir -p "$out"
  echo "sessions: $(wc -l <"$history")" >"$out/index.html"
  printf '![speed](%sspeed.png)\\n' "$base" >"$out/report.md"
  exit "${FAKE_REPORT_STATUS:-0}"
fi
echo "unexpected: $*" >&2; exit 2
"""

HISTORY_STEPS = ("Check out the history branch, or start it as an orphan", "Append tonight's sessions",
                 "Dashboard and change points", "Keep the history")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _night(origin: Path, work: Path, sessions: dict[str, str], env: dict[str, str]) -> list[str]:
    """One run of the history job's steps in a fresh clone; what each step printed."""
    _git(origin.parent, "clone", "-q", "--depth", "1", f"file://{origin}", str(work))
    for name, line in sessions.items():
        (work / "tonight" / f"nightly-{name}").mkdir(parents=True)
        (work / "tonight" / f"nightly-{name}" / f"session-{name}.jsonl").write_text(line + "\n")
    doc = yaml.safe_load((ROOT / "examples" / "workflows" / "nightly.yml").read_text())
    steps = {s.get("name"): s for s in doc["jobs"]["history"]["steps"]}
    printed = []
    for name in HISTORY_STEPS:
        script = steps[name]["run"]
        assert "${{" not in script, f"step {name!r}: pass expressions through env, not into the script"
        run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, capture_output=True,
                             text=True, timeout=60, env={**env, **doc["env"]})
        assert run.returncode == 0, f"step {name!r} failed: {run.stdout}{run.stderr}"
        printed.append(run.stdout)
    return printed


def test_the_nightly_keeps_its_history_on_an_orphan_branch(tmp_path: Path):
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    seed.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    (seed / "app.py").write_text("print(1)\n")
    _git(seed, "add", "app.py")
    _git(seed, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "main's own commit")
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pytest-mlxvlm").write_text(FAKE_REPORT)
    (bin_dir / "pytest-mlxvlm").chmod(0o755)
    summary = tmp_path / "summary.md"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "GITHUB_RUN_ID": "101",
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "REPORT_URL": "",
           "GITHUB_OUTPUT": str(tmp_path / "out.txt"), "GITHUB_STEP_SUMMARY": str(summary),
           "GIT_CONFIG_NOSYSTEM": "1"}

    _night(origin, tmp_path / "night1", {"mac": '{"session": 1}', "cpu": '{"session": 2}'}, env)
    log = _git(origin, "log", "--format=%s", "mlxvlm-history").splitlines()
    assert log == ["nightly 101"]  # one commit, with no parent: main's history is not inherited
    assert _git(origin, "rev-list", "--count", "mlxvlm-history") == "1"
    assert _git(origin, "ls-tree", "-r", "--name-only", "mlxvlm-history").splitlines() == [
        "history.jsonl", "report/index.html", "report/report.md"]
    assert "https://github.com/o/r/raw/mlxvlm-history/report/speed.png" in summary.read_text()  # absolute

    printed = _night(origin, tmp_path / "night2", {}, {**env, "GITHUB_RUN_ID": "102"})
    assert "nothing new to keep" in printed[-1]  # a night without sessions commits nothing, and passes
    assert _git(origin, "rev-list", "--count", "mlxvlm-history") == "1"

    _night(origin, tmp_path / "night3", {"mac": '{"session": 3}'}, {**env, "GITHUB_RUN_ID": "103"})
    assert _git(origin, "log", "--format=%s", "mlxvlm-history").splitlines() == ["nightly 103", "nightly 101"]
    assert _git(origin, "show", "mlxvlm-history:history.jsonl").count("\n") == 2  # 3 sessions, appended
    assert _git(origin, "log", "--format=%s", "main").splitlines() == ["main's own commit"]


# --- the linters CI runs ------------------------------------------------------------------------

def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip(f"{name} is not installed: pip install -e '.[dev]' (./run.sh installs it)")
    return found


def test_actionlint_finds_nothing_in_the_workflows_and_catches_a_mistake(tmp_path: Path):
    actionlint = _tool("actionlint")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # its shellcheck
    run = subprocess.run([actionlint, *map(str, ALL_WORKFLOWS)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.event.no_such_thing.title }}\n        timeout: 3\n")
    caught = subprocess.run([actionlint, str(broken)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert caught.returncode == 1 and 'unexpected key "timeout"' in caught.stdout


def test_zizmor_finds_nothing_in_the_action_and_the_workflows(tmp_path: Path):
    zizmor = _tool("zizmor")
    config = ROOT / ".github" / "zizmor.yml"
    files = [str(ROOT / "action.yml"), *map(str, ALL_WORKFLOWS)]
    run = subprocess.run([zizmor, "--offline", "--config", str(config), *files], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    unpinned = tmp_path / "unpinned.yml"
    unpinned.write_text("on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                        "      - uses: someone/something@v1\n")
    caught = subprocess.run([zizmor, "--offline", "--config", str(config), str(unpinned)], capture_output=True,
                            text=True)
    assert caught.returncode != 0 and "unpinned-uses" in caught.stdout


def test_shellcheck_finds_nothing_in_the_action_s_scripts():
    shellcheck = _tool("shellcheck")
    run = subprocess.run([shellcheck, *map(str, sorted((ROOT / "action").glob("*.sh")))], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout
