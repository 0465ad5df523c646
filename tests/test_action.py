"""The GitHub Action (action.yml and its steps in action/*.sh) does what its inputs say, and the
workflows that use it give it only inputs it has.

The step scripts run here for real, in bash, in scratch git repositories, with a stand-in for
pytest where the test is about the command line the action builds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
WORKFLOWS = sorted([*(ROOT / "examples" / "workflows").glob("*.yml"), *(ROOT / ".github" / "workflows").glob("*.yml")])
OUR_ACTION = re.compile(r"^(OWNER/pytest-mlxvlm@\S+|\./)$")


def _steps_using_the_action(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])
            if OUR_ACTION.match(str(step.get("uses", "")))]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    return path


def _commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    _git(repo, "add", name)
    _git(repo, "commit", "-qm", name)
    return _git(repo, "rev-parse", "HEAD")


def _run_script(name: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLXVLM_", "RUNNER_"))}
    full.update(env)
    return subprocess.run(["bash", str(ROOT / "action" / name)], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_every_input_is_described_and_used_and_nothing_undeclared_is_read():
    text = (ROOT / "action.yml").read_text()
    declared = set(ACTION["inputs"])
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), f"input {name} has no description"
        assert f"inputs.{name}" in text, f"input {name} is declared but never used"
    assert set(re.findall(r"inputs\.([a-z-]+)", text)) <= declared
    assert ACTION["runs"]["using"] == "composite"
    assert {"model", "base", "comment", "history", "pytest-args", "python-version", "install"} <= declared


def test_each_step_script_exists_and_gets_the_variables_it_reads():
    for step in ACTION["runs"]["steps"]:
        match = re.search(r'action/([a-z]+\.sh)"', step.get("run", ""))
        if not match:
            continue
        script = (ROOT / "action" / match[1]).read_text()
        read = set(re.findall(r"\$\{?(MLXVLM_[A-Z_]+)", script))
        assert read <= set(step.get("env", {})), f"{match[1]} reads {read - set(step.get('env', {}))} unset"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflows_give_the_action_only_its_inputs(path: Path):
    doc = yaml.safe_load(path.read_text())
    steps = _steps_using_the_action(path)
    assert steps, f"{path.name} does not use the pytest-mlxvlm action"
    for step in steps:
        given = set(step.get("with", {}))
        assert given <= set(ACTION["inputs"]), f"{path.name}: {given - set(ACTION['inputs'])} is no input"
        if step["with"].get("install-only") != "true":
            assert step["with"].get("model"), f"{path.name}: the action needs a model"
    triggers = doc.get("on") or doc.get(True)  # YAML 1.1 reads the key on as True
    if "pull_request" in triggers:
        comments = any(s["with"].get("comment", "true") == "true" for s in steps)
        for job in doc["jobs"].values():
            gates = [s for s in job["steps"] if OUR_ACTION.match(str(s.get("uses", "")))
                     and s["with"].get("base", "auto") == "auto"]
            checks_out = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
            if gates:
                assert [s["with"].get("fetch-depth") for s in checks_out] == [0], "the merge base must be cloned"
        if comments:
            granted = [doc.get("permissions", {})] + [j.get("permissions", {}) for j in doc["jobs"].values()]
            assert any(p.get("pull-requests") == "write" for p in granted), f"{path.name} cannot comment"


def test_the_three_pull_request_gates_cover_a_mac_of_ones_own_a_hosted_mac_and_a_linux_cpu():
    runners = {}
    for path in (ROOT / "examples" / "workflows").glob("pr-gate*.yml"):
        (job,) = yaml.safe_load(path.read_text())["jobs"].values()
        runners[path.stem] = job["runs-on"]
    assert runners["pr-gate"] == ["self-hosted", "macOS", "ARM64"]
    assert runners["pr-gate-macos-hosted"].startswith("macos-")
    assert runners["pr-gate-linux-cpu"].startswith("ubuntu-")
    (step,) = _steps_using_the_action(ROOT / "examples" / "workflows" / "pr-gate-linux-cpu.yml")
    assert step["with"]["extras"] == "cpu"


def test_the_action_installs_its_own_copy_by_default():
    (install,) = [s for s in ACTION["runs"]["steps"] if "install.sh" in s.get("run", "")]
    assert install["env"]["MLXVLM_ACTION_PATH"] == "${{ github.action_path }}"
    assert ACTION["inputs"]["install"]["default"] == ""
    script = (ROOT / "action" / "install.sh").read_text()
    assert 'requirement="${MLXVLM_ACTION_PATH:?}${extras:+[$extras]}"' in script
    assert "Linux) extras=cpu" in script


# the stand-in for pytest: it records its arguments, one a line, and exits with $FAKE_PYTEST_STATUS
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pytest ]; then
  shift 2
  printf '%s\\n' "$@" >"$FAKE_PYTEST_ARGS"
  for arg in "$@"; do case "$arg" in --mlx-markdown=*) echo "| Case | Speed |" >"${arg#--mlx-markdown=}" ;; esac; done
  exit "${FAKE_PYTEST_STATUS:-0}"
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REAL_PYTHON": sys.executable,
            "FAKE_PYTEST_ARGS": str(tmp_path / "args.txt"), "RUNNER_TEMP": str(tmp_path / "runner"),
            "GITHUB_OUTPUT": str(tmp_path / "output.txt")}


def test_measure_builds_the_session_and_hands_over_the_status(tmp_path: Path, fake_python: dict[str, str]):
    env = {**fake_python, "MLXVLM_MODEL": "synthetic:tiny", "MLXVLM_AB_BASE": "abc123",
           "MLXVLM_HISTORY": "session a.jsonl", "FAKE_PYTEST_STATUS": "1",
           "MLXVLM_PYTEST_ARGS": "--quick -k 'not video' --mlx-tolerance Speed=20"}
    (tmp_path / "session a.jsonl").write_text("{}\n")
    run = _run_script("measure.sh", tmp_path, env)
    assert run.returncode == 0, run.stderr  # the action's last step fails the job, after the comment
    args = (tmp_path / "args.txt").read_text().splitlines()
    report_dir = tmp_path / "runner" / "mlxvlm-report"
    assert args == ["--mlx-model", "synthetic:tiny", f"--mlx-markdown={report_dir}/report.md",
                    f"--mlx-json={report_dir}/results.json", "--junitxml", f"{report_dir}/junit.xml",
                    "--mlx-ab-base", "abc123", "--mlx-history=session a.jsonl",
                    "--quick", "-k", "not video", "--mlx-tolerance", "Speed=20"]
    outputs = _outputs(tmp_path / "output.txt")
    assert outputs["exit-code"] == "1" and outputs["report"] == f"{report_dir}/report.md"
    assert "json" not in outputs  # the stand-in wrote no JSON: no output names a missing file
    assert (report_dir / "session a.jsonl").exists()  # the history file travels with the artifact


def test_measure_without_base_or_history_and_a_bad_argument_line(tmp_path: Path, fake_python: dict[str, str]):
    run = _run_script("measure.sh", tmp_path, {**fake_python, "MLXVLM_MODEL": "m", "MLXVLM_AB_BASE": ""})
    assert run.returncode == 0
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert "--mlx-ab-base" not in args and not any(arg.startswith("--mlx-history") for arg in args)
    assert _outputs(tmp_path / "output.txt")["exit-code"] == "0"
    (tmp_path / "output.txt").unlink()
    bad = _run_script("measure.sh", tmp_path, {**fake_python, "MLXVLM_MODEL": "m", "MLXVLM_PYTEST_ARGS": "-k 'oops"})
    assert "::error title=pytest-mlxvlm::pytest-args cannot be split" in bad.stdout
    assert _outputs(tmp_path / "output.txt")["exit-code"] == "4"
    nomodel = _run_script("measure.sh", tmp_path, {**fake_python, "MLXVLM_MODEL": ""})
    assert nomodel.returncode != 0 and "the action needs its model input" in nomodel.stderr


def test_base_auto_is_the_merge_base_of_the_pull_request(tmp_path: Path):
    origin = _repo(tmp_path / "origin")
    root = _commit(origin, "a.py", "1")
    fork_point = _commit(origin, "b.py", "2")
    _git(origin, "checkout", "-q", "-b", "feature")
    _commit(origin, "c.py", "3")
    _git(origin, "checkout", "-q", "main")
    _commit(origin, "d.py", "4")  # main moved on after the branch
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{origin}", str(clone))
    out = tmp_path / "out.txt"
    run = _run_script("base.sh", clone, {"MLXVLM_BASE": "auto", "GITHUB_BASE_REF": "main", "GITHUB_OUTPUT": str(out)})
    assert run.returncode == 0, run.stdout + run.stderr  # a shallow clone is deepened first
    assert _outputs(out)["base"] == fork_point
    out.unlink()
    assert _run_script("base.sh", clone, {"MLXVLM_BASE": "auto", "GITHUB_OUTPUT": str(out)}).returncode == 0
    assert _outputs(out)["base"] == ""  # not a pull request: gate against stored baselines
    out.unlink()
    assert _run_script("base.sh", clone, {"MLXVLM_BASE": root, "GITHUB_OUTPUT": str(out)}).returncode == 0
    assert _outputs(out)["base"] == root
    bad = _run_script("base.sh", clone, {"MLXVLM_BASE": "origin/mian", "GITHUB_OUTPUT": str(out)})
    assert bad.returncode == 1 and "base 'origin/mian' is no revision of this clone" in bad.stdout


@pytest.mark.parametrize(("os_name", "where", "said"), [
    ("macOS", "github-hosted", "not Apple-silicon timings"),
    ("macOS", "self-hosted", None),
    ("Linux", "github-hosted", "MLX runs on its CPU backend"),
])
def test_the_summary_says_what_the_timings_are(tmp_path: Path, os_name: str, where: str, said: str | None):
    summary = tmp_path / "summary.md"
    run = _run_script("caveat.sh", tmp_path, {"RUNNER_OS": os_name, "MLXVLM_RUNNER_ENVIRONMENT": where,
                                              "GITHUB_STEP_SUMMARY": str(summary)})
    assert run.returncode == 0
    text = summary.read_text() if summary.exists() else ""
    if said is None:
        assert text == "" and run.stdout == ""
    else:
        assert said in text
    if where == "github-hosted" and os_name == "macOS":
        assert "Metal Performance Shaders are not supported" in text and "actions/runner-images#11899" in text
        assert run.stdout.startswith("::warning title=pytest-mlxvlm::")


@pytest.mark.slow
def test_install_sets_up_the_action_s_own_copy(tmp_path: Path):
    """The install step for real: a virtual environment with this checkout built and installed in
    it, the pytest-mlxvlm command answering, its bin folder on the job's PATH. Its dependencies come
    from this interpreter's site-packages (--no-deps, PYTHONPATH), so that no model stack is
    downloaded; the package itself is the one the step installed."""
    import site

    env = {"MLXVLM_ACTION_PATH": str(ROOT), "MLXVLM_EXTRAS": "", "RUNNER_TEMP": str(tmp_path),
           "MLXVLM_PIP_ARGS": "--no-deps --quiet", "GITHUB_PATH": str(tmp_path / "path.txt"),
           "GITHUB_ENV": str(tmp_path / "env.txt"), "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    run = _run_script("install.sh", tmp_path, env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    venv = tmp_path / "mlxvlm-venv"
    assert f"pip install {ROOT} --no-deps --quiet" in run.stdout
    assert (tmp_path / "path.txt").read_text() == f"{venv}/bin\n"
    assert (tmp_path / "env.txt").read_text() == f"VIRTUAL_ENV={venv}\n"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest_mlxvlm; print(pytest_mlxvlm.__file__)"],
                           capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv))


def test_install_refuses_pip_args_it_cannot_split(tmp_path: Path):
    """An unclosed quote in pip-args stops the step with a one-line error before pip runs (the
    project under test would otherwise go uninstalled while the job measures on)."""
    env = {"MLXVLM_ACTION_PATH": str(ROOT), "MLXVLM_EXTRAS": "", "RUNNER_TEMP": str(tmp_path),
           "MLXVLM_PIP_ARGS": '-e ".[dev]', "GITHUB_PATH": str(tmp_path / "path.txt")}
    run = _run_script("install.sh", tmp_path, env)
    assert run.returncode == 1
    assert run.stdout.startswith("::error title=pytest-mlxvlm::pip-args cannot be split as a shell would")
    assert "pip install" not in run.stdout and not (tmp_path / "path.txt").exists()
