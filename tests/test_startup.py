"""pytest starts fast wherever the plugin is installed: loading it imports no heavy library.

Heavy libraries belong inside the functions that use them. Checked in a fresh process (this
one has them all loaded) started in an empty folder (no conftest.py or ini file of this
repository), without timing anything; ``python -m benchmarks.startup`` measures the wall time.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("scipy", "numpy", "mlx", "mlx_vlm", "PIL", "matplotlib", "ruptures")

PROBE = """
import json, sys
{body}
print(json.dumps({{"plugin": "pytest_mlxvlm.plugin" in sys.modules,
                   "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})}}))
"""


@pytest.mark.parametrize("body", [
    "import pytest_mlxvlm.plugin",
    # what every pytest start does where the plugin is installed: options, hooks, configure
    "import pytest; pytest.main(['--help'])",
], ids=["import", "pytest --help"])
def test_loading_the_plugin_imports_no_heavy_library(body, tmp_path):
    run = subprocess.run([sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["plugin"]  # loaded (through its entry point for pytest --help)
    assert found["heavy"] == []
