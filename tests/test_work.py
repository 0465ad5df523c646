"""The work profile's vocabulary: the modal decode step and its events, the JSON layout and hash,
which primitives only view memory (no mlx needed)."""

from __future__ import annotations

import json

import pytest

from pytest_mlxvlm.measure.work import PREFILL, PhaseWork, WorkProfile, is_view, summarise


def test_summarise_takes_the_modal_step_and_lists_the_others():
    usual = PhaseWork({"Matmul": 2}, async_evals=1, syncs=1, sync_kinds={"item": 1})
    grown = PhaseWork({"Matmul": 2, "Concatenate": 4, "Slice": 1}, async_evals=1, syncs=1, sync_kinds={"item": 1})
    cached = PhaseWork({"Matmul": 2}, evals=1, async_evals=1, syncs=1, sync_kinds={"item": 1})
    steps = [grown, usual, usual, cached, usual]
    profile = summarise({PREFILL: PhaseWork({"Matmul": 9}, evals=2)}, steps, key={"mlx": "1"})
    assert profile.decode_step == usual
    assert [(e.step, e.delta) for e in profile.events] == [
        (1, PhaseWork({"Concatenate": 4, "Slice": 1})), (4, PhaseWork(evals=1))]
    assert [profile.step(k) for k in range(1, 6)] == steps
    with pytest.raises(IndexError):
        profile.step(6)
    tie = summarise({}, [grown, usual])  # a tie goes to the earliest step
    assert tie.decode_step == grown and [e.step for e in tie.events] == [2]
    single = summarise({PREFILL: PhaseWork()}, [])
    assert single.decode_step.is_empty() and single.decode_steps == 0 and single.events == []


def test_profile_round_trips_through_json_with_a_stable_layout():
    steps = [PhaseWork({"Matmul": 2, "Add": 1}, async_evals=1)] * 3 + [PhaseWork({"Matmul": 2}, evals=1)]
    profile = summarise({PREFILL: PhaseWork({"Softmax": 1, "Matmul": 4}, evals=1)}, steps,
                        prompt_tokens=90, key={"mlx": "0.1", "device": "cpu"})
    data = profile.to_dict()
    assert list(data) == ["format", "hash", "key", "tokens", "prompt_tokens", "decode_steps", "phases", "events"]
    assert list(data["phases"][PREFILL]["primitives"]) == ["Matmul", "Softmax"]
    assert list(data["key"]) == ["device", "mlx"]
    assert data["events"] == [{"step": 4, "primitives": {"Add": -1}, "evals": 1, "async_evals": -1,
                               "syncs": 0, "sync_kinds": {}}]
    text = json.dumps(data)
    again = WorkProfile.from_dict(json.loads(text))
    assert again == profile and again.to_dict() == data and again.hash == profile.hash
    # the hash follows the work only: the same counts in another order, another key
    other = summarise({PREFILL: PhaseWork({"Matmul": 4, "Softmax": 1}, evals=1)}, steps, key={"mlx": "0.2"})
    assert other.hash == profile.hash and other.prefill.hash == profile.prefill.hash
    changed = summarise({PREFILL: PhaseWork({"Matmul": 5, "Softmax": 1}, evals=1)}, steps)
    assert changed.hash != profile.hash and changed.decode_step.hash == profile.decode_step.hash
    with pytest.raises(ValueError, match="newer"):
        WorkProfile.from_dict({**data, "format": 99})


def test_view_primitives():
    assert all(is_view(n) for n in ("Reshape", "Transpose", "Slice", "Broadcast", "View float16"))
    assert not any(is_view(n) for n in ("Matmul", "Copy", "Concatenate", "SliceUpdate", "CompiledMultiplyAdd"))
