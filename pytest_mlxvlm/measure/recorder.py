"""Records the work profile of one generation: MLX primitives, evals and host syncs per phase.

MLX builds a lazy graph and runs it when asked (``mx.eval``, ``mx.async_eval``) or when the host
reads a value (``array.item()``, ``tolist()``, ``int(array)``, ...). ``WorkRecorder`` patches those
entry points for the duration of a ``with`` block; on every call it reads the pending graph of the
arrays passed (``mx.export_to_dot`` into memory) and counts its primitives by name, before the
call goes through. The generation loop marks each streamed token (``mark_token``), so the counts
fall into phases:

- ``prefill`` (or the phases named with ``phase(name)``): everything before the first token;
- decode steps: step k is what happens between token k-1 and token k (k = 1 .. tokens-1);
- ``tail``: what happens after the last token, until the block ends.

mlx-vlm launches the forward pass of token k+1 before it hands out token k, so step k holds the
graph of token k+1 and the prefill phase holds the graph of token 1 as well: consistent from run
to run, which is all a comparison needs.

``WorkRecorder.profile()`` summarises the steps into a ``measure.work.WorkProfile``.

What is counted:

- primitives: every node of the graph each ``mx.eval`` / ``mx.async_eval`` call (and each host
  read of a pending array) makes MLX run, by ``Primitive::name()`` (``Matmul``, ``Softmax``,
  fused kernels as ``Compiled`` + the names of the fused primitives, ``View float16``, ...);
- ``evals`` / ``async_evals``: calls of ``mx.eval`` / ``mx.async_eval``, with or without pending
  work (an eval of arrays already scheduled still waits for them);
- ``syncs``: host reads of an array through ``item``, ``tolist``, ``__int__``, ``__float__``,
  ``__bool__``, ``__index__``, ``__array__`` and calls of ``mx.synchronize``, by kind in
  ``sync_kinds``. Each may run the graph it reads; those primitives are counted too.

What is not counted: reads through the buffer protocol (``np.array(a)``, ``memoryview(a)``:
nanobind implements it in C, out of reach of a patch), evals from C++ or from threads other than
the one that entered the recorder, and functions imported under another name
(``from mlx.core import eval as e``; plain ``from mlx.core import eval`` is patched too).

Only the standard library and mlx (imported inside functions: the plugin must not import mlx at
pytest start-up).
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

from .work import DECODE_STEP, PREFILL, TAIL, PhaseWork, WorkProfile, WorkProfileUnavailable, nonzero_counts, summarise

# Methods of mx.array that read a value on the host (and run its pending graph first).
SYNC_METHODS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "__array__")
SYNC_FUNCTIONS = ("synchronize",)
EVAL_FUNCTIONS = ("eval", "async_eval")

_LABEL = re.compile(r'label\s*=\s*"([^"]*)"')

# --- reading MLX graphs ---------------------------------------------------------------------


def _arrays(tree: Any, array_type: type) -> Iterator[Any]:
    """The mx.arrays in a tree of lists, tuples and dicts, as ``mx.eval`` flattens it."""
    if isinstance(tree, array_type):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _arrays(item, array_type)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _arrays(item, array_type)


class GraphReader:
    """Counts the primitives in the pending graph of some arrays, without changing it."""

    def __init__(self) -> None:
        try:
            import mlx.core as mx
        except ImportError as exc:
            raise WorkProfileUnavailable(f"mlx cannot be imported ({exc})") from None
        version = getattr(mx, "__version__", "?")
        if not hasattr(mx, "export_to_dot"):
            raise WorkProfileUnavailable(f"mlx {version} has no mx.export_to_dot to read the lazy graph with")
        if not hasattr(mx, "stop_gradient"):
            raise WorkProfileUnavailable(f"mlx {version} has no mx.stop_gradient")
        self._mx = mx
        self._to_file = False
        probe = mx.array([1.0, 2.0]) * mx.array([3.0, 4.0])
        try:
            names = self.names([probe])
        except Exception:  # noqa: BLE001 - an mlx that writes to file names only?
            self._to_file = True
            try:
                names = self.names([probe])
            except Exception as exc:  # noqa: BLE001 - whatever it is, the recorder cannot work
                raise WorkProfileUnavailable(f"mx.export_to_dot of mlx {version} failed: {exc}") from None
        if names != ["Multiply"]:
            raise WorkProfileUnavailable(
                f"mx.export_to_dot of mlx {version} wrote a graph this reader does not understand "
                f"(primitives of a * b read as {names!r})")

    def _dot(self, arrays: list[Any]) -> str:
        mx = self._mx
        if not self._to_file:
            buf = io.StringIO()
            mx.export_to_dot(buf, *arrays)
            return buf.getvalue()
        fd, path = tempfile.mkstemp(suffix=".dot")
        os.close(fd)
        try:
            mx.export_to_dot(path, *arrays)
            with open(path) as fh:
                return fh.read()
        finally:
            os.unlink(path)

    def names(self, arrays: list[Any]) -> list[str]:
        """The primitive names of the pending graph of ``arrays``, in MLX's depth-first order.

        Each array is wrapped in a ``stop_gradient`` for the export and the wrappers' nodes are
        dropped from the result: the export only ever sees fresh arrays of its own, never the
        caller's.
        """
        if not arrays:
            return []
        wrapped = [self._mx.stop_gradient(a) for a in arrays]
        text = self._dot(wrapped)
        del wrapped
        # A wrapper is a StopGradient node whose output is a sink of the graph: every array of
        # the caller's feeds a wrapper, so no other StopGradient's output is a sink.
        names: list[str] = []
        wrappers: set[int] = set()
        for line in text.splitlines():
            found = _LABEL.search(line)
            if found:
                names.append(found.group(1))
            elif "rank=sink" in line and names and names[-1] == "StopGradient":
                wrappers.add(len(names) - 1)
        if len(wrappers) == len(arrays):
            return [n for i, n in enumerate(names) if i not in wrappers]
        # an export that marks sinks otherwise: drop the right number of StopGradients
        extra = len(arrays)
        out: list[str] = []
        for name in reversed(names):
            if extra and name == "StopGradient":
                extra -= 1
                continue
            out.append(name)
        out.reverse()
        return out

    def count(self, arrays: list[Any]) -> Counter[str]:
        return Counter(self.names(arrays))


# --- the recorder ---------------------------------------------------------------------------


class WorkRecorder:
    """Counts what MLX runs inside a ``with`` block, by phase and decode step.

    ::

        with WorkRecorder() as rec:
            for i, result in enumerate(stream_generate(...)):
                rec.mark_token(i)
        profile = rec.profile(prompt_tokens=..., key=profile_key(...))

    Everything patched is restored on exit, also after an exception. The counting reads graphs
    only, so the generated tokens are the same with and without the recorder. Calls from other
    threads pass through uncounted. Raises ``WorkProfileUnavailable`` on entry where the
    installed mlx cannot be read this way.
    """

    def __init__(self, *, first_phase: str = PREFILL, patch_modules: bool = True) -> None:
        self._first_phase = first_phase
        self._patch_modules = patch_modules
        self._restore: list[Callable[[], None]] = []
        self._reader: GraphReader | None = None
        self._thread: int | None = None
        self._busy = False
        self._active = False
        self.before: dict[str, PhaseWork] = {first_phase: PhaseWork()}
        self._phase = first_phase
        self.steps: list[PhaseWork] = []  # decode step k at index k-1
        self._after: PhaseWork | None = None  # work since the last token
        self._last_index: int | None = None
        self.tokens = 0
        self.overhead_s = 0.0  # seconds spent reading graphs

    # the context manager

    def __enter__(self) -> WorkRecorder:
        self._reader = GraphReader()
        import mlx.core as mx

        self._thread = threading.get_ident()
        try:
            self._install(mx)
        except BaseException:
            self._uninstall()
            raise
        self._active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._active = False
        self._uninstall()

    def _install(self, mx: Any) -> None:
        originals: dict[str, Any] = {}
        for name in (*EVAL_FUNCTIONS, *SYNC_FUNCTIONS):
            original = getattr(mx, name, None)
            if original is None:
                continue
            originals[name] = original
            wrapper = (self._wrap_eval(original, name) if name in EVAL_FUNCTIONS
                       else self._wrap_sync_function(original, name))
            self._set(mx, name, wrapper)
            if self._patch_modules:  # modules that did ``from mlx.core import eval``
                for module in list(sys.modules.values()):
                    namespace = getattr(module, "__dict__", None)
                    if module is mx or not isinstance(namespace, dict):
                        continue
                    if namespace.get(name) is original:
                        self._set(module, name, wrapper)
        array = mx.array
        for name in SYNC_METHODS:
            original = array.__dict__.get(name)
            if original is not None:
                self._set(array, name, self._wrap_sync_method(original, name.strip("_")))

    def _set(self, owner: Any, name: str, value: Any) -> None:
        original = getattr(owner, name)
        setattr(owner, name, value)
        self._restore.append(lambda: setattr(owner, name, original))

    def _uninstall(self) -> None:
        errors = []
        while self._restore:
            undo = self._restore.pop()
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - restore the rest, then report
                errors.append(exc)
        if errors:
            raise RuntimeError(f"the work recorder could not restore everything: {errors[0]}")

    def _counting(self) -> bool:
        return self._active and not self._busy and threading.get_ident() == self._thread

    def _wrap_eval(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        recorder = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if recorder._counting():
                recorder._record(kind, (args, kwargs))
            return original(*args, **kwargs)

        wrapper.__name__ = kind
        wrapper.__doc__ = getattr(original, "__doc__", None)
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapper

    def _wrap_sync_function(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        recorder = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if recorder._counting():
                recorder._record(kind, None)
            return original(*args, **kwargs)

        wrapper.__name__ = kind
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapper

    def _wrap_sync_method(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        recorder = self

        def wrapper(this: Any, *args: Any, **kwargs: Any) -> Any:
            if recorder._counting():
                recorder._record(kind, this)
            return original(this, *args, **kwargs)

        wrapper.__name__ = original.__name__ if hasattr(original, "__name__") else kind
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapper

    def _bucket(self) -> PhaseWork:
        if self._after is not None:
            return self._after
        return self.before[self._phase]

    def _record(self, kind: str, tree: Any) -> None:
        """Count one call: its kind, and the primitives of the graph it is about to run."""
        self._busy = True
        start = time.perf_counter()
        try:
            assert self._reader is not None
            bucket = self._bucket()
            if kind == "eval":
                bucket.evals += 1
            elif kind == "async_eval":
                bucket.async_evals += 1
            else:
                bucket.syncs += 1
                bucket.sync_kinds[kind] = bucket.sync_kinds.get(kind, 0) + 1
            if tree is not None:
                arrays = list(_arrays(tree, self._reader._mx.array))
                for name, n in self._reader.count(arrays).items():
                    bucket.primitives[name] = bucket.primitives.get(name, 0) + n
        finally:
            self.overhead_s += time.perf_counter() - start
            self._busy = False

    # phases

    def phase(self, name: str) -> None:
        """Start a named phase (before the first token: ``preprocess``, ``prefill``, ...)."""
        if self._after is not None:
            raise RuntimeError(f"phase({name!r}) after the first token: decode steps are marked by tokens")
        if name in (DECODE_STEP, TAIL):
            raise ValueError(f"{name!r} is not a name for a phase before the first token")
        self.before.setdefault(name, PhaseWork())
        self._phase = name

    def mark_token(self, index: int | None = None) -> None:
        """A token came out of the generation (``index``: its 0-based number; a repeated index,
        as mlx-vlm's final result repeats the last token, is ignored)."""
        if index is not None:
            if self._last_index is not None and index <= self._last_index:
                return
            self._last_index = index
        else:
            self._last_index = (self._last_index if self._last_index is not None else -1) + 1
        if self._after is not None:
            self.steps.append(self._after)
        self._after = PhaseWork()
        self.tokens += 1

    def profile(self, *, prompt_tokens: int | None = None, key: Mapping[str, Any] | None = None) -> WorkProfile:
        """The profile of what was recorded so far."""
        before = {name: PhaseWork.from_dict(work.to_dict()) for name, work in self.before.items()}
        tail = PhaseWork.from_dict(self._after.to_dict()) if self._after is not None else PhaseWork()
        return summarise(before, [PhaseWork.from_dict(s.to_dict()) for s in self.steps], tail,
                         tokens=self.tokens, prompt_tokens=prompt_tokens, key=key)


def count_graph(*arrays: Any) -> dict[str, int]:
    """The primitives MLX would run to evaluate ``arrays`` now, by name (nothing is evaluated)."""
    reader = GraphReader()
    flat = list(_arrays(list(arrays), reader._mx.array))
    return nonzero_counts(reader.count(flat))


# --- what legitimately changes a profile ----------------------------------------------------


def compile_enabled() -> bool:
    """Whether ``mx.compile`` fuses here (off with ``mx.disable_compile()`` or MLX_DISABLE_COMPILE)."""
    import mlx.core as mx

    fused = mx.compile(lambda x: x * 2 + 1)
    y = fused(mx.array([1.0]))
    names = GraphReader().names([y])
    mx.eval(y)
    return any(n.startswith("Compiled") for n in names)


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def profile_key(*, model: str | None = None, prompt_tokens: int | None = None,
                image_tokens: int | None = None, image_size: str | None = None,
                tokens: int | None = None, compile: bool | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What legitimately changes a work profile: this environment's mlx and mlx-vlm versions,
    device, backend and whether compile fuses, plus what the caller knows of the case. Parts left
    as None are left out (and not compared)."""
    key: dict[str, Any] = {}
    try:
        import mlx.core as mx
    except ImportError:
        mx = None  # type: ignore[assignment]
    if mx is not None:
        key["mlx"] = getattr(mx, "__version__", None) or _package_version("mlx")
        device = mx.default_device()
        kind = getattr(getattr(device, "type", None), "name", None) or str(device)
        key["device"] = kind
        backend = "cpu"
        if kind == "gpu":
            if getattr(getattr(mx, "metal", None), "is_available", lambda: False)():
                backend = "metal"
            elif getattr(getattr(mx, "cuda", None), "is_available", lambda: False)():
                backend = "cuda"
            else:
                backend = "gpu"
        key["backend"] = backend
        if compile is None:
            try:
                compile = compile_enabled()
            except Exception:  # noqa: BLE001 - unknown rather than wrong
                compile = None
    key["mlx_vlm"] = _package_version("mlx-vlm") or _package_version("mlx_vlm")
    key.update({"model": model, "prompt_tokens": prompt_tokens, "image_tokens": image_tokens,
                "image_size": image_size, "tokens": tokens, "compile": compile})
    if extra:
        key.update(extra)
    return {k: key[k] for k in sorted(key) if key[k] is not None}
