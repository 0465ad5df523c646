"""Whether an ``--mlx-*`` value written with a space moved pytest's rootdir or ini file."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest


def rootdir_moved_by(config: pytest.Config) -> str:
    """Why pytest's rootdir is not the project's, when an ``--mlx-*`` value moved it ("" if not).

    pytest finds its rootdir and ini file before it loads plugins, so it reads the value of a
    plugin option written with a space (``--mlx-history /elsewhere/h.jsonl``) as a test path
    when that path exists: one outside the project moves the rootdir (baselines, the commit the
    history records, the A/B checkout) and drops the project's ini file. Checked against the
    rootdir pytest finds without those values (its own ``determine_setup``; no check where that
    private function has changed)."""
    args = [str(arg) for arg in config.invocation_params.args]
    here = config.invocation_params.dir
    culprits = [(name, value) for name, value in zip(args, args[1:])
                if name.startswith("--mlx-") and "=" not in name and not value.startswith("-")
                and (here / value).exists()]
    if not culprits:
        return ""
    try:
        from _pytest.config.findpaths import determine_setup
        given = {"inifile": config.option.inifilename, "override_ini": config.option.override_ini,
                 "args": list(config.option.file_or_dir or []), "rootdir_cmd_arg": config.option.rootdir or None,
                 "invocation_dir": here}
        accepted = inspect.signature(determine_setup).parameters  # pytest 8 has no override_ini
        rootdir, inifile = determine_setup(**{k: v for k, v in given.items() if k in accepted})[:2]
    except Exception:  # noqa: BLE001 - pytest's private API changed: no check
        return ""
    moved = [f"{what} ({got or 'none'}, not {expected or 'none'})" for what, got, expected in (
        ("rootdir", config.rootpath, Path(rootdir)), ("ini file", config.inipath, Path(inifile) if inifile else None))
        if got != expected]
    if not moved:
        return ""
    written = ", ".join(f"{name} {value}" for name, value in culprits)
    fixed = " ".join(f"{name}={value}" for name, value in culprits)
    return (f"pytest set its {' and '.join(moved)} by the value in {written}: it reads a plugin "
            f"option's value as a test path before it loads the plugin. Write {fixed} (with '=')")
