"""Support of releases.py: one virtual environment per release pair (docs/releases.md).

The environments of benchmarks/releases.py: one virtual environment per release pair from
PyPI (exact pins, the plugin of one revision without its dependencies, ``pip freeze`` kept), the
commands run in them (each in its own process group, stopped on every way out), and the one-line
reason a command could not do its work."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Sequence

from pytest_mlxvlm.common.files import atomic_write_text, write_json

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT_S = 1800


class ReleasePair(Protocol):
    """What an environment needs to know of its pair."""

    mlx: str
    mlxvlm: str
    forced: bool

    @property
    def key(self) -> str: ...


# --- one-line reasons ------------------------------------------------------------------------

_REASONS = (
    re.compile(r"(?:ModelLoadError|UsageError|ABSetupError|WorkerError)[:\s]+(.+)"),
    re.compile(r"(pytest-mlxvlm: .+)"),
    re.compile(r"^E\s+(\w*Error: .+)", re.M),
    re.compile(r"^(\w*Error: .+)", re.M),
)
_MODEL_TYPE = re.compile(r"[Mm]odel type ['\"]?([\w.-]+)['\"]? (?:not supported|is not supported)")


def one_line_reason(output: str) -> str:
    """Why a step could not measure, in one line, from its output; never a traceback."""
    match = _MODEL_TYPE.search(output)
    if match:
        return f"no {match.group(1)} model type"
    for pattern in _REASONS:
        found = pattern.findall(output)
        if found:
            return found[-1].strip().splitlines()[0][:200]
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:200]


# --- environments ----------------------------------------------------------------------------

def env_python(work: Path, pair: ReleasePair) -> Path:
    """The interpreter of a pair's environment."""
    return work / pair.key / "venv" / "bin" / "python"


def plugin_requirements(pyproject: Path) -> list[str]:
    """The plugin's own pure dependencies (mlx and mlx-vlm are the pair's)."""
    import tomllib

    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if not re.match(r"mlx(-vlm)?\b", d.split(";")[0].strip())]


def run_logged(command: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
               cwd: Path | None = None, timeout_s: float = STEP_TIMEOUT_S) -> tuple[int, str]:
    """Run a command in its own process group, its output into ``log``; stopped (the whole
    group) on a timeout, an interrupt or any other way out. Returns (exit code, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = 124
        finally:
            if proc.poll() is None:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=10)
                        break
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        continue
    return code, log.read_text(errors="replace")


def plugin_rev(rev: str = "HEAD") -> tuple[str, str]:
    """(commit, tree of pytest_mlxvlm/) of a revision of this checkout: the plugin a campaign measures with."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    return git("rev-parse", f"{rev}^{{commit}}"), git("rev-parse", f"{rev}:pytest_mlxvlm")


def install_plugin(py: Path, commit: str, log: Path) -> None:
    """This plugin as of ``commit`` (committed files only), without dependencies, into an env."""
    snapshot = Path(tempfile.mkdtemp(prefix="releases-plugin-"))
    try:
        subprocess.run(f"git -C '{ROOT}' archive {commit} | tar -x -C '{snapshot}'", shell=True, check=True)
        code, text = run_logged([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                                 str(snapshot)], log)
        if code:
            raise RuntimeError(f"plugin install: exit {code}: {one_line_reason(text)}")
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


def install(work: Path, out: Path, pair: ReleasePair, commit: str, tree: str) -> dict[str, Any]:
    """The pair's environment (reused when complete): exact pins from PyPI, the plugin's pure
    dependencies, the plugin of ``commit`` without dependencies (installed again when the env
    holds another plugin tree); ``pip freeze`` into the output."""
    home = work / pair.key
    complete = home / "complete.json"
    py = env_python(work, pair)
    if complete.exists() and py.exists():
        state = json.loads(complete.read_text())
    else:
        shutil.rmtree(home / "venv", ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        pins = [f"mlx[cpu]=={pair.mlx}", f"mlx-vlm=={pair.mlxvlm}"]
        pip = [str(py), "-m", "pip", "install", "--quiet"]
        steps = [[sys.executable, "-m", "venv", str(home / "venv")], [*pip, "--upgrade", "pip"]]
        if pair.forced:  # mlx-vlm with what it declares, then the older mlx over it
            steps += [[*pip, pins[1], *plugin_requirements(ROOT / "pyproject.toml")],
                      [*pip, pins[0], f"mlx-cpu=={pair.mlx}"]]
        else:
            steps.append([*pip, *pins, *plugin_requirements(ROOT / "pyproject.toml")])
        steps.append([*pip, "--no-deps", "vllm-mlx==0.6.0"])  # the cache suite's third engine, as run.sh
        for number, command in enumerate(steps):
            code, text = run_logged(command, home / f"install.{number}.log")
            if code:
                raise RuntimeError(f"{' '.join(command[3:8])}: exit {code}: {one_line_reason(text)}")
        state = {"pair": pair.key, "python": str(py), "created": datetime.now().isoformat(timespec="seconds")}
    if state.get("plugin_tree") != tree:
        install_plugin(py, commit, home / "install.plugin.log")
        state.update(plugin_commit=commit, plugin_tree=tree)
        state["freeze"] = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
        state["pip_check"] = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True,
                                            text=True).stdout.strip()
        write_json(complete, state)
    freeze_out = out / "envs" / pair.key / "freeze.txt"
    freeze_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(freeze_out, state["freeze"])
    return state
