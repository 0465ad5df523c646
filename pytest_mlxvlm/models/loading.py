"""Model sources: Hugging Face ids, local paths and synthetic models, all loaded by ``mlx_vlm.load``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub, synthetic


class ModelLoadError(RuntimeError):
    """A model that cannot be found or loaded; the message says what to do."""


@dataclass
class LoadedModel:
    """A model and its processor, loaded once per session."""

    spec: str
    path: Path | None
    model: Any
    processor: Any
    load_time_s: float = 0.0
    ab: Any = None  # in the paired A/B mode: the base and head workers (abmode.ABModel)
    isolated: Any = None  # with --mlx-isolate: the worker that holds the model (isolation.IsolatedModel)


def short_name(spec: str) -> str:
    """``mlx-community/Qwen3-VL-8B-Instruct-4bit`` -> ``Qwen3-VL-8B-Instruct-4bit``."""
    if synthetic.is_synthetic(spec):
        return spec[len(synthetic.PREFIX) :]
    return Path(spec.rstrip("/")).name or spec


def model_slug(spec: str) -> str:
    """A file-name-safe key for a model spec (its baseline file's name). Not one-to-one on
    purpose: leading ``./`` and ``../`` are dropped, so ``../mlx-community/X`` (a local copy of
    a hub model under its org/name) shares ``mlx-community/X``'s key; ``:`` and ``-``, and a
    space and ``_``, also meet."""
    if synthetic.is_synthetic(spec):
        name = spec[len(synthetic.PREFIX) :].strip().rstrip("/")  # a twin's folder: a safe name
        return "synthetic-" + name.replace("/", "--").replace(":", "-").replace(" ", "_").lstrip(".-~")
    text = spec.strip().rstrip("/")
    return text.replace("/", "--").replace(":", "-").replace(" ", "_").lstrip(".-") or "model"


def source_kind(spec: str) -> str:
    if synthetic.is_synthetic(spec):
        return "synthetic"
    if _looks_like_path(spec):
        return "local"
    return "hub"


def _looks_like_path(spec: str) -> bool:
    """A local path, as opposed to a Hugging Face ``owner/name`` id."""
    return (
        spec.startswith((".", "/", "~"))
        or Path(spec).expanduser().exists()
        or spec.count("/") != 1
    )


def resolve_path(spec: str) -> Path:
    """Where the checkpoint of a spec lives on disk, building or finding it first."""
    kind = source_kind(spec)
    if kind == "synthetic":
        try:
            return synthetic.ensure_built(synthetic.parse(spec))
        except synthetic.SyntheticModelError as exc:
            raise ModelLoadError(str(exc)) from None
    if kind == "local":
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"model path {spec!r} is not a directory; pass a folder that holds "
                "config.json and *.safetensors, a Hugging Face id, or a synthetic:<name>"
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model path {spec!r} has no config.json: not a checkpoint folder")
        return path
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> Path:
    patterns = ["*.json", "*.safetensors", "*.py", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
    found = hub.snapshot(repo_id, patterns)
    if isinstance(found, Path):
        return found
    reason = found
    raise ModelLoadError(
        f"model {repo_id!r} is not in the local Hugging Face cache and could not be "
        f"downloaded ({reason}); run `huggingface-cli download {repo_id}` on a connected "
        "machine, pass a local path, or use a synthetic:<name> model"
    )


def load(spec: str) -> LoadedModel:
    """Load a model spec through ``mlx_vlm.load``; errors become one-line ModelLoadErrors."""
    path = resolve_path(spec)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {spec!r}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(
            f"model {spec!r}: {path / 'config.json'} has no 'model_type' (a JSON object with "
            "the model's architecture is expected)"
        )
    from mlx_vlm import load as mlx_vlm_load
    from mlx_vlm.utils import get_model_and_args

    try:
        get_model_and_args(config)
    except ValueError as exc:
        raise ModelLoadError(
            f"model {spec!r}: model type {config.get('model_type')!r} is not supported by "
            f"mlx-vlm ({str(exc).splitlines()[0]})"
        ) from None
    if not any(path.glob("*.safetensors")):  # mlx_vlm.load says only "FileNotFoundError"
        raise ModelLoadError(
            f"model {spec!r}: no *.safetensors weights in {path} (a checkpoint folder holds "
            "config.json and the *.safetensors weights)"
        )
    start = time.perf_counter()
    previous = os.environ.get("HF_HUB_OFFLINE")
    if synthetic.is_synthetic(spec):
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model, processor = mlx_vlm_load(str(path))
    except Exception as exc:  # noqa: BLE001 - corrupt weights, bad tokenizer, ...
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelLoadError(
            f"model {spec!r} could not be loaded from {path}: {type(exc).__name__}: {message}"
        ) from exc
    finally:
        if synthetic.is_synthetic(spec):
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
    return LoadedModel(
        spec=spec,
        path=path,
        model=model,
        processor=processor,
        load_time_s=time.perf_counter() - start,
    )
