"""The exact comparison of work profiles: every verdict, the one-line descriptions, the parts of
the key that make two profiles not comparable, and the comparison of generated tokens."""

from __future__ import annotations

import json

import pytest

from pytest_mlxvlm.gate.work import (
    ADDED,
    NOT_COMPARABLE,
    REMOVED,
    SAME,
    VIEWS,
    compare_profiles,
    compare_tokens,
    describe,
    describe_tokens,
    key_differences,
)
from pytest_mlxvlm.measure.work import PREFILL, PhaseWork, WorkProfile, summarise

KEY = {"mlx": "0.32.4", "mlx_vlm": "0.7.10", "device": "cpu", "backend": "cpu", "compile": True,
       "prompt_tokens": 90, "image_size": "224x224", "tokens": 8}
STEP = {"Matmul": 19, "Softmax": 2, "Multiply": 32, "Reshape": 9, "Slice": 16}


def step(primitives=None, *, evals=0, async_evals=1, item=1, **more) -> PhaseWork:
    counts = dict(STEP if primitives is None else primitives)
    counts.update(more)
    return PhaseWork({k: v for k, v in counts.items() if v}, evals=evals, async_evals=async_evals,
                     syncs=item, sync_kinds={"item": item} if item else {})


PREFILL_WORK = PhaseWork({"Matmul": 60, "Softmax": 6, "Reshape": 20}, evals=2, async_evals=1,
                         syncs=24, sync_kinds={"tolist": 20, "item": 4})


def profile(steps=None, prefill=PREFILL_WORK, key=KEY, tokens=None) -> WorkProfile:
    steps = [step() for _ in range(7)] if steps is None else steps
    return summarise({PREFILL: prefill}, steps, tokens=tokens, prompt_tokens=90, key=key)


def with_prefill(**changes: int) -> PhaseWork:
    counts = dict(PREFILL_WORK.primitives)
    for name, n in changes.items():
        counts[name] = counts.get(name, 0) + n
    return PhaseWork(counts, PREFILL_WORK.evals, PREFILL_WORK.async_evals, PREFILL_WORK.syncs,
                     dict(PREFILL_WORK.sync_kinds))


def test_identical_profiles_are_the_same():
    diff = compare_profiles(profile(), profile())
    assert diff.verdict == SAME and not diff.phases and not diff.events
    assert describe(diff) == "same work"


def test_profiles_compare_as_stored_dicts_too():
    base, head = profile(), profile([step(Multiply=92)] * 7)
    from_dicts = compare_profiles(json.loads(json.dumps(base.to_dict())), head.to_dict())
    assert from_dicts == compare_profiles(base, head)
    json.dumps(from_dicts.to_dict())  # plain data


def test_extra_elementwise_work_per_step_is_added():
    diff = compare_profiles(profile(), profile([step(Multiply=92)] * 7))
    assert diff.verdict == ADDED
    assert diff.phases["decode_step"].primitives == {"Multiply": 60}
    assert describe(diff) == "+60 Multiply per decode step"


def test_changes_in_several_phases_are_all_described():
    head_step = step(Matmul=22, Multiply=33, Add=1, CompiledSigmoidMultiply=1)
    diff = compare_profiles(profile(), profile([head_step] * 7, prefill=with_prefill(Matmul=6)))
    assert diff.verdict == ADDED
    assert describe(diff) == ("+3 Matmul, +1 Add, +1 CompiledSigmoidMultiply, +1 Multiply per decode step; "
                              "+6 Matmul in prefill")


def test_many_kinds_of_views_are_summed_after_the_compute():
    head_step = step(Matmul=22, Multiply=34, Add=1, Flatten=3, Transpose=3, Reshape=12, Slice=14)
    diff = compare_profiles(profile(), profile([head_step] * 7))
    assert describe(diff) == "+3 Matmul, +2 Multiply, +1 Add, +9/-2 views per decode step"
    assert diff.verdict == ADDED


def test_a_long_list_of_event_steps_is_cut():
    steps = [step(Matmul=20) if k % 2 else step() for k in range(40)]
    text = describe(compare_profiles(profile([step()] * 40), profile(steps)))
    assert text.startswith("step 2: +1 Matmul; step 4: +1 Matmul")
    assert text.endswith("step 12: +1 Matmul; 14 more steps")


def test_async_eval_replaced_by_eval_is_added():
    diff = compare_profiles(profile(), profile([step(evals=1, async_evals=0)] * 7))
    assert diff.verdict == ADDED
    assert describe(diff) == "+1 eval, -1 async_eval per decode step"


def test_an_added_host_sync_is_added():
    diff = compare_profiles(profile(), profile([step(item=2)] * 7))
    assert diff.verdict == ADDED
    assert describe(diff) == "+1 sync (+1 item) per decode step"
    swapped = PhaseWork(dict(STEP), async_evals=1, syncs=1, sync_kinds={"tolist": 1})
    other_kind = compare_profiles(profile(), profile([swapped] * 7))
    assert other_kind.verdict == ADDED  # a different kind of read is not the same work
    assert describe(other_kind) == "syncs (-1 item, +1 tolist) per decode step"


def test_less_work_is_removed():
    diff = compare_profiles(profile(), profile([step(Matmul=17)] * 7, prefill=with_prefill(Softmax=-6)))
    assert diff.verdict == REMOVED
    assert describe(diff) == "-2 Matmul per decode step; -6 Softmax in prefill"
    fewer_views_too = compare_profiles(profile(), profile([step(Matmul=17, Reshape=3)] * 7))
    assert fewer_views_too.verdict == REMOVED


def test_more_and_less_work_together_is_added():
    diff = compare_profiles(profile(), profile([step(Matmul=17, Multiply=40)] * 7))
    assert diff.verdict == ADDED
    assert describe(diff) == "+8 Multiply, -2 Matmul per decode step"


def test_view_only_changes_are_views():
    diff = compare_profiles(profile(), profile([step(Reshape=10, Transpose=2)] * 7))
    assert diff.verdict == VIEWS
    assert describe(diff) == "+2 Transpose, +1 Reshape per decode step (views only)"
    fewer = compare_profiles(profile(), profile(prefill=with_prefill(Reshape=-20)))
    assert fewer.verdict == VIEWS and describe(fewer) == "-20 Reshape in prefill (views only)"


def test_a_new_event_step_is_described_by_its_step():
    steps = [step() for _ in range(7)]
    steps[4] = step(Concatenate=4, Slice=12)
    diff = compare_profiles(profile(), profile(steps))
    assert diff.verdict == ADDED
    assert "decode_step" not in diff.phases and list(diff.events) == [5]
    assert describe(diff) == "step 5: +4 Concatenate, -4 Slice"


def test_events_that_become_the_usual_step_are_described_against_it():
    # base evaluates the cache state at step 5 only; head at every step
    base_steps = [step() for _ in range(7)]
    base_steps[4] = step(evals=1, Slice=20)
    head_steps = [step(evals=1, Slice=20) for _ in range(7)]
    diff = compare_profiles(profile(base_steps), profile(head_steps))
    assert diff.verdict == ADDED
    assert describe(diff) == "+4 Slice, +1 eval per decode step; on top of that, step 5: -4 Slice, -1 eval"
    # the reverse: every step but one gets lighter
    back = compare_profiles(profile(head_steps), profile(base_steps))
    assert back.verdict == REMOVED


def test_an_event_that_goes_away_is_removed():
    steps = [step() for _ in range(7)]
    steps[2] = step(Matmul=20)
    diff = compare_profiles(profile(steps), profile())
    assert diff.verdict == REMOVED and describe(diff) == "step 3: -1 Matmul"


def test_work_after_the_last_token_is_described():
    base = profile()
    head = profile()
    head.phases["tail"] = PhaseWork(evals=1)
    assert describe(compare_profiles(base, head)) == "+1 eval after the last token"


@pytest.mark.parametrize("part, value, reason", [
    ("mlx", "0.33.0", "mlx 0.32.4 → 0.33.0"),
    ("mlx_vlm", "0.8.0", "mlx-vlm 0.7.10 → 0.8.0"),
    ("backend", "metal", "backend cpu → metal"),
    ("compile", False, "compile on → off"),
    ("image_size", "448x448", "image size 224x224 → 448x448"),
    ("prompt_tokens", 120, "prompt tokens 90 → 120"),
    ("lane", "b", "lane a → b"),
])
def test_keys_that_differ_are_not_comparable(part, value, reason):
    base_key = {**KEY, "lane": "a"}
    diff = compare_profiles(profile(key=base_key), profile([step(Multiply=92)] * 7, key={**base_key, part: value}))
    assert diff.verdict == NOT_COMPARABLE and diff.not_comparable == [reason]
    assert describe(diff) == f"not comparable: {reason}"
    assert not diff.phases


def test_several_key_parts_are_all_named_and_unknown_parts_are_not_compared():
    head_key = {**KEY, "mlx": "0.33.0", "device": "gpu"}
    assert key_differences(KEY, head_key) == ["mlx 0.32.4 → 0.33.0", "device cpu → gpu"]
    partial = {k: v for k, v in KEY.items() if k != "mlx"}
    assert compare_profiles(profile(key=partial), profile(key={**KEY, "mlx": "9"})).verdict == SAME


def test_generations_of_other_lengths_are_not_comparable():
    diff = compare_profiles(profile(key={}), profile([step()] * 15, key={}))
    assert diff.verdict == NOT_COMPARABLE
    assert describe(diff) == "not comparable: generated tokens 8 → 16"


def test_compare_tokens():
    assert compare_tokens([1, 2, 3], [1, 2, 3]) is None
    assert compare_tokens([], []) is None
    assert compare_tokens(list(range(20)), [*range(17), 99, 18, 19]) == 17
    assert compare_tokens([5, 6], [7, 6]) == 0
    assert compare_tokens([1, 2, 3], [1, 2]) == 2
    assert describe_tokens([1, 2], [1, 2]) == "outputs identical"
    assert describe_tokens(list(range(20)), [*range(17), 99, 18, 19]) == "outputs differ from token 17"
    assert describe_tokens([1, 2, 3], [1, 2]) == "outputs differ from token 2 (3 → 2 tokens)"
