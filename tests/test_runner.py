"""The measuring loop and the fixed output length, with stand-ins for the model and tokenizer."""

from types import SimpleNamespace

import pytest

from pytest_mlxvlm.measure.runner import fixed_output_length, run_adaptive, run_case
from pytest_mlxvlm.results import Sample


class Counter:
    """A stand-in for one measured generation: numbered samples, one per call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Sample:
        self.calls += 1
        return Sample(time_s=float(self.calls), ttft_s=0.1, preprocess_s=0.01, prefill_s=0.09,
                      prompt_tokens=90, cached_tokens=0, image_tokens=64, generation_tokens=8,
                      prompt_tps=1000.0, generation_tps=100.0, end_to_end_tps=8.0 / self.calls,
                      peak_memory=1.0)


@pytest.mark.parametrize("rounds, warmup", [(5, 1), (3, 0), (1, 2), (0, 0)])
def test_run_case_warms_up_then_measures(rounds, warmup):
    measure = Counter()
    samples, warm = run_case(measure, rounds=rounds, warmup=warmup)
    assert measure.calls == rounds + warmup
    assert len(samples) == rounds and len(warm) == warmup
    # warmup runs come first and are kept apart from the measured ones
    assert [s.time_s for s in warm] == [float(i) for i in range(1, warmup + 1)]
    assert [s.time_s for s in samples] == [float(i) for i in range(warmup + 1, warmup + rounds + 1)]


def test_adaptive_rounds_leave_out_a_metric_that_is_always_zero():
    """One token generated: Decode is 0 in every round, and has no precision to reach; the steady
    metrics reach theirs, and the JSON-bound widths hold no infinity."""
    import dataclasses
    import json

    def one_token() -> Sample:
        return dataclasses.replace(Counter()(), generation_tokens=1, generation_tps=0.0, end_to_end_tps=10.0)

    samples, _, info = run_adaptive(one_token, warmup=0, min_rounds=6, max_rounds=30, budget_s=60, target=0.05)
    assert info["stopped"] == "precision reached" and len(samples) == 6
    assert set(info["half_width"]) == {"end_to_end_tps", "ttft_s"}
    assert "Infinity" not in json.dumps(info)


def test_run_case_stops_at_the_first_error():
    measure = Counter()

    def failing() -> Sample:
        if measure.calls == 2:
            raise MemoryError("out of memory")
        return measure()

    with pytest.raises(MemoryError):
        run_case(failing, rounds=5, warmup=1)
    assert measure.calls == 2


def _tokenizer(eos=(151645, 151643), **extra):
    return SimpleNamespace(stopping_criteria=SimpleNamespace(eos_token_ids=list(eos)), **extra)


def test_fixed_output_length_disables_and_restores_eos_ids():
    tokenizer = _tokenizer()
    processor = SimpleNamespace(tokenizer=tokenizer)
    with fixed_output_length(processor):
        assert tokenizer.stopping_criteria.eos_token_ids == []
    assert tokenizer.stopping_criteria.eos_token_ids == [151645, 151643]


def test_fixed_output_length_on_a_bare_tokenizer_and_after_an_error():
    tokenizer = _tokenizer(eos=(2,))
    with pytest.raises(RuntimeError):
        with fixed_output_length(tokenizer):  # a processor that is its own tokenizer
            assert tokenizer.stopping_criteria.eos_token_ids == []
            raise RuntimeError("generation failed")
    assert tokenizer.stopping_criteria.eos_token_ids == [2]


def test_fixed_output_length_restores_the_thinking_budget():
    tokenizer = _tokenizer()
    with fixed_output_length(tokenizer):
        tokenizer.thinking_budget_criteria = "set during generation"
    assert not hasattr(tokenizer, "thinking_budget_criteria")  # it had none: removed again
    tokenizer = _tokenizer(thinking_budget_criteria="mine")
    with fixed_output_length(tokenizer):
        tokenizer.thinking_budget_criteria = "replaced"
    assert tokenizer.thinking_budget_criteria == "mine"


def test_fixed_output_length_without_stopping_criteria_changes_nothing():
    tokenizer = SimpleNamespace(name="t")
    with fixed_output_length(SimpleNamespace(tokenizer=tokenizer)):
        pass
    assert vars(tokenizer) == {"name": "t"}


@pytest.mark.parametrize("with_token_ids", [True, False])
def test_generated_ids_with_and_without_the_results_token_ids(monkeypatch, with_token_ids):
    """mlx-vlm 0.7.0's GenerationResult has no token_ids: the ids come from the streamed tokens."""
    mx = pytest.importorskip("mlx.core")
    mlx_vlm = pytest.importorskip("mlx_vlm")
    import mlx_vlm.utils

    from pytest_mlxvlm.measure import runner
    from pytest_mlxvlm.results import GenerationRequest

    def stream(*args, **kwargs):
        for n in range(1, kwargs["max_tokens"] + 1):
            fields = dict(token=mx.array(100 + n), generation_tokens=n, prompt_tokens=5, cached_tokens=0,
                          prompt_tps=50.0, finish_reason=None, logprobs=None)
            if with_token_ids:
                fields["token_ids"] = [200 + i for i in range(1, n + 1)] if n == kwargs["max_tokens"] else None
            yield SimpleNamespace(**fields)

    monkeypatch.setattr(mlx_vlm, "stream_generate", stream)
    monkeypatch.setattr(mlx_vlm.utils, "prepare_inputs", lambda *a, **k: {"input_ids": mx.array([[1, 2, 3]])})
    monkeypatch.setattr(mlx_vlm.utils, "should_add_special_tokens", lambda *a: False)
    monkeypatch.setattr(runner, "format_prompt", lambda *a: "prompt")
    model = SimpleNamespace(config=SimpleNamespace(model_type="fake", image_token_index=9))
    sample = runner.measure_generation(model, _tokenizer([2]), GenerationRequest(image=None, prompt="p", max_tokens=4))
    assert sample.token_ids == ([201, 202, 203, 204] if with_token_ids else [101, 102, 103, 104])
    assert sample.generation_tokens == 4
