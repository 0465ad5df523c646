"""The work recorder (measure/recorder.py): exact counts of MLX primitives, evals and host syncs per phase and step.

Hand-built computations check the counts themselves (all operands evaluated and of one shape, so
no broadcast or reshape can slip in); the synthetic model checks determinism and that recording
changes nothing, without naming any count that a new MLX could change.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import types
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")

from pytest_mlxvlm.gate.work import compare_profiles, describe  # noqa: E402
from pytest_mlxvlm.measure.recorder import WorkRecorder, count_graph, profile_key  # noqa: E402
from pytest_mlxvlm.measure.work import (  # noqa: E402
    DECODE_STEP,
    PREFILL,
    TAIL,
    PhaseWork,
    StepEvent,
    WorkProfileUnavailable,
)


def _evaluated(*values: list[float]) -> list:
    arrays = [mx.array(v) for v in values]
    mx.eval(*arrays)
    return arrays


def test_count_graph_counts_the_pending_primitives_only():
    a, b, c = _evaluated([1.0, 2.0], [3.0, 4.0], [5.0, 6.0])
    x = a * b + c
    assert count_graph(x) == {"Add": 1, "Multiply": 1}
    assert count_graph([x, {"again": (x,)}]) == {"Add": 1, "Multiply": 1}  # shared nodes once
    assert count_graph(a) == {}  # evaluated: nothing to run
    mx.eval(x)
    assert count_graph(x) == {}
    assert x.tolist() == [8.0, 14.0]


def test_count_graph_keeps_the_callers_stop_gradients():
    a, b = _evaluated([1.0, 2.0], [3.0, 4.0])
    x = mx.stop_gradient(a * b) + a
    assert count_graph(x) == {"Add": 1, "Multiply": 1, "StopGradient": 1}
    assert count_graph(mx.stop_gradient(a * b)) == {"Multiply": 1, "StopGradient": 1}


def _steps(rec: WorkRecorder, a, b, tokens: int, extra_at: int | None = None) -> list[list[float]]:
    """A hand-built decode loop: one Multiply and one Add, an async eval and a tolist per step
    (step ``extra_at`` multiplies once more)."""
    out = []
    x = a * b
    mx.eval(x)  # "prefill": 1 eval, 1 Multiply
    for i in range(tokens):
        rec.mark_token(i)
        if i == tokens - 1:
            break
        y = x * a + b
        if extra_at is not None and i + 1 == extra_at:
            y = y * a
        mx.async_eval(y)
        out.append(y.tolist())
        x = y
    return out


def test_recorder_splits_prefill_decode_steps_and_events():
    a, b = _evaluated([1.0, 0.5], [0.25, 0.125])
    with WorkRecorder() as rec:
        values = _steps(rec, a, b, tokens=6, extra_at=3)
    profile = rec.profile(prompt_tokens=7)
    assert profile.tokens == 6 and profile.decode_steps == 5 and profile.prompt_tokens == 7
    assert profile.prefill == PhaseWork({"Multiply": 1}, evals=1)
    assert profile.decode_step == PhaseWork({"Add": 1, "Multiply": 1}, async_evals=1, syncs=1,
                                            sync_kinds={"tolist": 1})
    assert profile.events == [StepEvent(3, PhaseWork({"Multiply": 1}))]
    assert profile.tail.is_empty()
    assert profile.step(3).primitives == {"Add": 1, "Multiply": 2}
    assert profile.total().primitives == {"Add": 5, "Multiply": 7}
    assert profile.total().async_evals == 5
    # the same computation without the recorder gives the same values
    with WorkRecorder() as other:
        pass
    assert values == _values_without_recorder(a, b, 6, 3)
    assert other.profile().tokens == 0


def _values_without_recorder(a, b, tokens: int, extra_at: int) -> list[list[float]]:
    out = []
    x = a * b
    mx.eval(x)
    for i in range(tokens - 1):
        y = x * a + b
        if i + 1 == extra_at:
            y = y * a
        mx.async_eval(y)
        out.append(y.tolist())
        x = y
    return out


def test_implicit_evaluation_by_a_host_read_is_counted():
    p, q = _evaluated(2.0, 3.0)
    with WorkRecorder() as rec:
        assert int(p * q) == 6
        assert (p + q).item() == 5.0
        mx.synchronize()
    work = rec.profile().prefill
    assert work.primitives == {"Add": 1, "Multiply": 1}
    assert work.syncs == 3 and work.sync_kinds == {"int": 1, "item": 1, "synchronize": 1}
    assert work.evals == 0 and work.async_evals == 0


def test_named_phases_and_repeated_token_marks():
    a, b = _evaluated([1.0], [2.0])
    with WorkRecorder(first_phase="preprocess") as rec:
        mx.eval(a + b)
        rec.phase(PREFILL)
        mx.eval(a * b)
        rec.mark_token(0)
        rec.mark_token(0)  # mlx-vlm's last result repeats the last token
        mx.eval(a - b)
        rec.mark_token(1)
        rec.mark_token(1)
        mx.eval(a / b)  # after the last token
        with pytest.raises(RuntimeError):
            rec.phase("late")
    profile = rec.profile()
    assert list(profile.phases) == ["preprocess", PREFILL, DECODE_STEP, TAIL]
    assert profile.phases["preprocess"].primitives == {"Add": 1}
    assert profile.prefill.primitives == {"Multiply": 1}
    assert profile.decode_step.primitives == {"Subtract": 1}
    assert profile.tail.primitives == {"Divide": 1}
    assert profile.tokens == 2 and profile.decode_steps == 1


def test_everything_is_restored_also_after_an_exception():
    originals = {name: getattr(mx, name) for name in ("eval", "async_eval", "synchronize")}
    methods = {name: mx.array.__dict__[name] for name in ("item", "tolist", "__int__", "__bool__")}
    with pytest.raises(KeyError):
        with WorkRecorder():
            assert mx.eval is not originals["eval"]
            assert mx.array.__dict__["item"] is not methods["item"]
            raise KeyError("boom")
    assert {name: getattr(mx, name) for name in originals} == originals
    assert all(mx.array.__dict__[name] is m for name, m in methods.items())


def test_modules_that_imported_eval_by_name_are_patched_and_restored(monkeypatch):
    module = types.ModuleType("fake_vlm_generate")
    module.eval = mx.eval  # as ``from mlx.core import eval`` does
    monkeypatch.setitem(sys.modules, module.__name__, module)
    a, b = _evaluated([1.0], [2.0])
    with WorkRecorder() as rec:
        module.eval(a * b)
    assert rec.profile().prefill == PhaseWork({"Multiply": 1}, evals=1)
    assert module.eval is mx.eval


def test_calls_from_other_threads_pass_through_uncounted():
    a, b = _evaluated([1.0], [2.0])
    with WorkRecorder() as rec:
        worker = threading.Thread(target=lambda: mx.eval(a * b))
        worker.start()
        worker.join()
        mx.eval(a + b)
    assert rec.profile().prefill == PhaseWork({"Add": 1}, evals=1)


def test_missing_export_to_dot_is_a_clear_error_and_patches_nothing(monkeypatch):
    original = mx.eval
    monkeypatch.delattr(mx, "export_to_dot")
    with pytest.raises(WorkProfileUnavailable, match="export_to_dot"):
        with WorkRecorder():
            pass
    assert mx.eval is original


def test_an_export_to_dot_that_writes_to_file_names_only_still_works(monkeypatch):
    original = mx.export_to_dot

    def file_names_only(file, *args, **kwargs):
        if not isinstance(file, str):
            raise TypeError("file names only")
        return original(file, *args, **kwargs)

    monkeypatch.setattr(mx, "export_to_dot", file_names_only)
    a, b, c = _evaluated([1.0, 2.0], [3.0, 4.0], [5.0, 6.0])
    assert count_graph(a * b - c) == {"Multiply": 1, "Subtract": 1}


@pytest.mark.parametrize("export, message", [
    (lambda file, *args, **kwargs: (_ for _ in ()).throw(RuntimeError("no")), "failed: no"),
    (lambda file, *args, **kwargs: file.write("digraph {}") if hasattr(file, "write") else None,
     "does not understand"),
])
def test_an_unreadable_export_is_a_clear_error(monkeypatch, export, message):
    monkeypatch.setattr(mx, "export_to_dot", export)
    with pytest.raises(WorkProfileUnavailable, match=message):
        WorkRecorder().__enter__()


def test_profile_key_describes_this_environment():
    key = profile_key(prompt_tokens=90, image_size="224x224", tokens=16, extra={"lane": "a"})
    assert key["mlx"] == mx.__version__
    assert key["device"] in ("cpu", "gpu") and key["backend"] in ("cpu", "metal", "cuda", "gpu")
    assert isinstance(key["compile"], bool)
    assert key["prompt_tokens"] == 90 and key["image_size"] == "224x224" and key["lane"] == "a"
    assert "image_tokens" not in key  # unknown parts are left out
    assert list(key) == sorted(key)
    assert profile_key(compile=False)["compile"] is False


# --- the synthetic model --------------------------------------------------------------------


def _generate(loaded, image: Path, max_tokens: int, rec: WorkRecorder | None = None) -> list[int]:
    from mlx_vlm import stream_generate
    from mlx_vlm.utils import prepare_inputs

    from pytest_mlxvlm.config.settings import DEFAULT_PROMPT
    from pytest_mlxvlm.measure.runner import fixed_output_length, format_prompt

    model, processor = loaded.model, loaded.processor
    formatted = format_prompt(model, processor, DEFAULT_PROMPT, 1)
    tokens = []
    with fixed_output_length(processor):
        inputs = prepare_inputs(processor, images=[str(image)], prompts=formatted,
                                image_token_index=getattr(model.config, "image_token_index", None))
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values", "attention_mask")}
        for result in stream_generate(model, processor, formatted, input_ids=inputs["input_ids"],
                                      pixel_values=inputs.get("pixel_values"), mask=inputs.get("attention_mask"),
                                      max_tokens=max_tokens, temperature=0.0, **extra):
            if rec is not None:
                rec.mark_token(result.generation_tokens - 1)
            if result.generation_tokens > len(tokens):
                tokens.append(int(result.token))
    return tokens


@pytest.fixture(scope="module")
def tiny():
    from pytest_mlxvlm.config.settings import parse_resolution
    from pytest_mlxvlm.measure.images import image_file
    from pytest_mlxvlm.models.loading import load

    loaded = load("synthetic:tiny")
    image = image_file(parse_resolution("224x224"), Path(tempfile.mkdtemp(prefix="mlxvlm-work-")))
    _generate(loaded, image, 4)  # the first run at a shape builds kernels
    return loaded, image


@pytest.mark.slow
def test_a_real_generation_has_one_profile_and_the_same_tokens(tiny):
    loaded, image = tiny
    plain = _generate(loaded, image, 12)
    profiles = []
    for _ in range(2):
        with WorkRecorder() as rec:
            tokens = _generate(loaded, image, 12, rec)
        assert tokens == plain
        profiles.append(rec.profile(key=profile_key(model="synthetic:tiny", tokens=12)))
    first, second = profiles
    assert first.to_dict() == second.to_dict()
    assert compare_profiles(first, second).verdict == "same"
    assert first.tokens == 12 and first.decode_steps == 11
    assert first.decode_step.nodes > 0 and first.prefill.nodes > first.decode_step.nodes
    assert first.decode_step.evals + first.decode_step.async_evals >= 1
    assert first.decode_step.syncs >= 1  # the token read on the host


@pytest.mark.slow
def test_extra_work_in_the_decoder_shows_as_added_primitives(tiny):
    import mlx.nn as nn

    loaded, image = tiny
    with WorkRecorder() as rec:
        _generate(loaded, image, 6, rec)
    base = rec.profile()
    inner = loaded.model.language_model.model
    norm = inner.norm

    class TwiceScaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = norm

        def __call__(self, x):
            y = self.inner(x)
            for _ in range(5):
                y = y * mx.array(1.0, dtype=y.dtype)
            return y

    inner.norm = TwiceScaled()
    try:
        with WorkRecorder() as rec:
            _generate(loaded, image, 6, rec)
    finally:
        inner.norm = norm
    diff = compare_profiles(base, rec.profile())
    assert diff.verdict == "added"
    assert diff.phases[DECODE_STEP].primitives.get("Multiply") == 5
    assert "+5 Multiply" in describe(diff) and "per decode step" in describe(diff)
