"""The package's layers hold, ARCHITECTURE.md matches the code, and the public names import."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import architecture

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_points_up_or_sideways():
    assert architecture.violations() == []


def test_the_rule_catches_an_upward_import(monkeypatch):
    graph = architecture.imports()
    graph["measure.runner"].add("harness.session")  # the core reaching into pytest's session
    graph["gate.compare"].add("reports.report")  # two parts of one layer
    monkeypatch.setattr(architecture, "imports", lambda: graph)
    found = architecture.violations()
    assert any("measure.runner imports pytest_mlxvlm.harness.session" in v for v in found)
    assert any("gate.compare imports pytest_mlxvlm.reports.report" in v for v in found)


def test_every_module_has_a_layer_and_no_folder_is_crowded():
    mods = architecture.modules()
    for name in mods:
        assert architecture.part_of(name) in architecture.LAYERS
    folders: dict[Path, int] = {}
    for path in mods.values():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > 15}
    assert not crowded, f"more than 15 modules in {crowded}: split by concern"


def test_architecture_page_matches_the_code():
    assert architecture.current() == architecture.generated(), "run python -m benchmarks.architecture"


def test_every_public_name_imports_in_a_fresh_process():
    code = ("import pytest_mlxvlm as p, pytest_mlxvlm.testing as t, pytest_mlxvlm.hookspec as h\n"
            "missing = [n for n in p.__all__ if getattr(p, n, None) is None]\n"
            "missing += [n for n in t.__all__ if getattr(t, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert set(p.__all__) <= set(dir(p))\n"
            "print(len(p.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 15


def test_an_internal_name_is_not_public():
    import pytest_mlxvlm

    with pytest.raises(AttributeError, match="no attribute 'BenchSession'"):
        pytest_mlxvlm.BenchSession  # noqa: B018


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", ["README.md", "ARCHITECTURE.md", "docs/writing-tests.md"])
def test_documented_examples_import_only_public_names(page):
    import pytest_mlxvlm
    import pytest_mlxvlm.testing

    public = {"pytest_mlxvlm": set(pytest_mlxvlm.__all__), "pytest_mlxvlm.testing": set(pytest_mlxvlm.testing.__all__)}
    seen = 0
    for block in _python_blocks((ROOT / page).read_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_mlxvlm"):
                seen += 1
                assert node.module in public, f"{page} imports the internal module {node.module}"
                names = {a.name for a in node.names}
                assert names <= public[node.module], f"{page}: {names - public[node.module]} not public"
    assert seen, f"{page} shows no import of the public names"
