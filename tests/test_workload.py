"""Jobs of the load generators (suites/server/workload.py): stamped images per request, and
sessions whose turns carry the conversation before them."""

from __future__ import annotations

import json

from pytest_mlxvlm.config.settings import Conversation, Turn, WorkloadFile
from pytest_mlxvlm.config.settings import Resolution
from pytest_mlxvlm.suites.server.client import Timing
from pytest_mlxvlm.suites.server.workload import WorkloadJobs, expected_tokens, one_image_jobs


def _answer(text: str) -> Timing:
    return Timing(time_s=0.1, ttft_s=0.05, chunk_times=[0.05], prompt_tokens=10, cached_tokens=0,
                  completion_tokens=1, finish_reason="length", usage=True, text=text)


def _run(job) -> list[tuple[dict, dict]]:
    sent = []

    def send_one(body: bytes, meta: dict) -> Timing:
        sent.append((json.loads(body), meta))
        return _answer(f"answer {len(sent)}")
    job(send_one)
    return sent


def test_each_request_gets_its_own_stamped_image(tmp_path):
    image = tmp_path / "i.png"
    from PIL import Image

    Image.new("RGB", (32, 32), "white").save(image)
    jobs = one_image_jobs("m", "Describe.", image, 8, [7], "32x32")
    urls = {_run(jobs(i))[0][0]["messages"][0]["content"][0]["image_url"]["url"] for i in range(3)}
    assert len(urls) == 3
    body, meta = _run(jobs(3))[0]
    assert body["max_tokens"] == 8 and body["logit_bias"] == {"7": -1e4} and meta == {"image": "32x32"}
    again = one_image_jobs("m", "Describe.", image, 8, [7], "32x32")  # the next case of the session
    later = {_run(again(i))[0][0]["messages"][0]["content"][0]["image_url"]["url"] for i in range(3)}
    assert not later & urls, "a later case sent an image an earlier one sent (a vision cache would answer it)"


def test_a_session_sends_the_history_and_the_first_image_again(tmp_path):
    work = WorkloadFile("w", "built-in", (
        Conversation((Turn("One.", (Resolution(32, 32),), 4), Turn("Two."), Turn("Three.", (), 6)), session_id="s"),
        Conversation((Turn("Alone.", (Resolution(48, 32),)),)),
    ))
    jobs = WorkloadJobs(work, "m", 16, [], tmp_path)
    first, second, third = _run(jobs(0))
    assert [m["role"] for m in third[0]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert third[0]["messages"][1]["content"] == "answer 1" and third[0]["messages"][3]["content"] == "answer 2"
    image = first[0]["messages"][0]["content"][0]
    assert third[0]["messages"][0]["content"][0] == image and image["type"] == "image_url"
    assert [b["max_tokens"] for b, _ in (first, second, third)] == [4, 16, 6]
    assert [m["images"] for _, m in (first, second, third)] == ["32x32", "32x32 again", "32x32 again"]
    assert [(m["session"], m["turn"]) for _, m in (first, second, third)] == [("s", 1), ("s", 2), ("s", 3)]
    alone = _run(jobs(3))  # cycles: conversation 1
    assert len(alone) == 1 and "turn" not in alone[0][1] and alone[0][1]["images"] == "48x32"
    assert expected_tokens(work, 16) == {4, 6, 16}
