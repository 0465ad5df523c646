"""The README is a landing page that starts with the two set-up commands, and the documentation
site builds with ``mkdocs build --strict``, its references generated from the code."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first_block and README.index("```") < README.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines()]
    assert commands[:2] == ["./run.sh bench", "./run.sh test"]


def test_the_readme_is_a_landing_page():
    assert len(README.encode()) < 15_000, "the README is a landing page: move reference and evidence to docs/"
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert "A CI gate in five minutes" in headings and "Documentation" in headings
    assert "uses: OWNER/pytest-mlxvlm@" in README and "git+https://github.com/OWNER/pytest-mlxvlm" in README


def test_every_relative_link_of_the_readme_and_the_pages_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_the_generated_blocks_of_the_pages_are_what_the_code_declares():
    hooks = _hooks()
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        assert hooks.fill(text) == text, f"{page.name} is stale: run the docs hook's fill() over it"
    assert "<!-- action inputs: generated from action.yml -->" in (ROOT / "docs" / "gate.md").read_text()


def test_fill_replaces_a_stale_block_and_leaves_the_rest():
    hooks = _hooks()
    stale = ("# Page\n\n<!-- action inputs: generated from action.yml -->\n| old |\n"
             "<!-- end of action inputs -->\n\nafter\n")
    filled = hooks.fill(stale)
    assert "| old |" not in filled and "| `model` |" in filled and filled.endswith("\nafter\n")
    assert hooks.readme_as_index("[a](docs/usage.md#x) [b](ARCHITECTURE.md)") == "[a](usage.md#x) [b](architecture.md)"


def test_the_site_builds_strictly_with_the_references_from_the_code(tmp_path: Path):
    """mkdocs build --strict (without --quiet, which hides the warnings that --strict counts)."""
    mkdocs = shutil.which("mkdocs", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not mkdocs:
        pytest.skip("mkdocs is not installed: pip install -e '.[dev]' (./run.sh installs it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    from pytest_mlxvlm.harness.options import OPTIONS

    usage = (tmp_path / "site" / "usage" / "index.html").read_text()
    missing = [o.flag for o in OPTIONS if o.flag not in usage]
    assert not missing, f"options missing from the built reference: {missing}"
    home = (tmp_path / "site" / "index.html").read_text()
    assert "./run.sh bench" in home and 'href="gate/' in home  # the README, its links made site-relative
    assert (tmp_path / "site" / "architecture" / "index.html").exists()
