"""``python -m benchmarks``: list the scripts and what each regenerates; ``python -m benchmarks NAME ARGS...`` runs one.

Python scripts run as modules (``python -m benchmarks.NAME``), shell scripts with bash, both
from the repository root.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_line(path: Path) -> str:
    """The line each script starts with: what it regenerates (or what it supports)."""
    text = path.read_text()
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(text)) or ""
        return doc.strip().split("\n")[0]
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            return line.lstrip("# ").strip()
    return ""


def scripts() -> dict[str, dict[str, Path]]:
    """Scripts by kind: what regenerates a documented table or figure, support, probes."""
    kinds: dict[str, dict[str, Path]] = {"regenerates": {}, "support": {}, "probes": {}}
    for path in sorted([*HERE.glob("*.py"), *HERE.glob("*.sh")]):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        kind = "support" if first_line(path).startswith("Support of") else "regenerates"
        kinds[kind][path.stem if path.suffix == ".py" else path.name] = path
    for path in sorted((HERE / "probes").glob("*.py")):
        if path.name != "__init__.py":
            kinds["probes"][f"probes.{path.stem}"] = path
    return kinds


def main(argv: list[str]) -> int:
    kinds = scripts()
    if not argv or argv[0] in ("-h", "--help", "list"):
        for kind, members in kinds.items():
            print(f"{kind}:")
            width = max(map(len, members), default=0)
            for name, path in members.items():
                print(f"  {name:<{width}}  {first_line(path)}")
        print("\nrun one: python -m benchmarks NAME [ARGS...] (from the repository root)")
        return 0
    name, args = argv[0], argv[1:]
    every = {n: p for members in kinds.values() for n, p in members.items()}
    path = every.get(name) or every.get(name.removesuffix(".py"))
    if path is None:
        print(f"benchmarks: no script {name!r}; python -m benchmarks lists them", file=sys.stderr)
        return 2
    root = HERE.parent
    if path.suffix == ".sh":
        command = ["bash", str(path.relative_to(root)), *args]
    else:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        command = [sys.executable, "-m", module, *args]
    return subprocess.call(command, cwd=root, env=os.environ)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
