"""benchmarks/stream_timeline.py: which chunks are tokens, and how long streams overlapped."""

import json

import pytest

from benchmarks.stream_timeline import is_token, overlap


def chunk(delta: dict) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n"


@pytest.mark.parametrize(("line", "expected"), [
    (chunk({"role": "assistant"}), False),                      # vllm-mlx's role chunk
    (chunk({"content": ""}), True),                             # a token whose text is held back
    (chunk({"content": "a"}), True),
    (chunk({"role": "assistant", "content": "a"}), True),       # mlx_vlm.server's token chunk
    (chunk({"role": "assistant", "content": None}), False),     # mlx_vlm.server's finish chunk
    (b"data: [DONE]\n", False),
    (b": keep-alive\n", False),
])
def test_is_token(line: bytes, expected: bool) -> None:
    assert is_token(line) is expected


def test_overlap_counts_the_time_two_or_more_streams_were_open() -> None:
    assert overlap([(0.0, 2.0), (1.0, 3.0)]) == pytest.approx(1.0)
    assert overlap([(0.0, 1.0), (2.0, 3.0)]) == 0.0                # one after the other
    assert overlap([(0.0, 4.0), (1.0, 2.0), (1.5, 3.0)]) == pytest.approx(2.0)
