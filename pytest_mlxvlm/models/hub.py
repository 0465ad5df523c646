"""The Hugging Face hub, reached only where it must be: a snapshot from the local cache, else
downloaded when the hub may be contacted."""

from __future__ import annotations

import os
from pathlib import Path


def snapshot(repo_id: str, patterns: list[str]) -> Path | str:
    """The folder of ``repo_id``'s files matching ``patterns``, or, in one line, why there is none
    (``HF_HUB_OFFLINE`` is set, or the download failed)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:  # noqa: BLE001 - a miss falls through to the download or the reason below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - reported in one line
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
