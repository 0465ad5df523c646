"""Batching: the batch cases, bad images named, the similar-vs-mixed answer, and the batch suite end
to end on synthetic:tiny (small batches, few tokens; marked slow)."""

import json

import pytest

from pytest_mlxvlm.reports.mediareport import batch_section, similar_vs_mixed
from pytest_mlxvlm.results import CaseResult, Sample
from pytest_mlxvlm.suites.batching import MIXED, SIMILAR, BatchCase, BatchError, batch_cases, check_images

SMALL = ["--mlx-model", "synthetic:tiny", "-p", "no:benchmark", "--mlx-rounds", "2", "--mlx-max-tokens", "4",
         "--mlx-json", "out.json"]


def test_batch_cases_per_size():
    cases = batch_cases((1, 2, 4))
    assert [c.id for c in cases] == ["b1-similar-grouped", "b2-similar-grouped", "b2-mixed-grouped",
                                     "b2-mixed-ungrouped", "b4-similar-grouped", "b4-mixed-grouped",
                                     "b4-mixed-ungrouped"]
    assert BatchCase(4, mixed=False, grouped=True).resolutions() == [SIMILAR] * 4
    assert BatchCase(4, mixed=True, grouped=False).resolutions() == list(MIXED)
    mean = sum(r.width * r.height for r in MIXED) / len(MIXED)
    assert abs(mean / (SIMILAR.width * SIMILAR.height) - 1) < 0.05  # about the same pixels on average


def test_an_unreadable_image_is_named(tmp_path):
    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    check_images([good, good])
    with pytest.raises(BatchError, match="request 2 of 3: cannot open image '.*bad.png'"):
        check_images([good, bad, good])


def _case(size: int, mixed: bool, grouped: bool, times: list[float]) -> CaseResult:
    samples = [Sample(time_s=t, ttft_s=t / 3, preprocess_s=0.0, prefill_s=t / 3, prompt_tokens=100 * size,
                      cached_tokens=0, image_tokens=0, generation_tokens=4 * size, prompt_tps=100.0,
                      generation_tps=20.0, end_to_end_tps=4 * size / t, peak_memory=0.1) for t in times]
    return CaseResult(model="m", resolution=BatchCase(size, mixed, grouped).id, samples=samples,
                      workload={"batch": {"size": size, "mixed": mixed, "group_by_shape": grouped,
                                          "resolutions": [r.id for r in BatchCase(size, mixed, grouped).resolutions()]}})


def test_similar_vs_mixed_states_speed_and_steadiness():
    cases = [_case(4, False, True, [1.0, 1.0, 1.02]), _case(4, True, True, [1.5, 1.2, 1.8]),
             _case(4, True, False, [2.0, 2.0, 2.0])]
    (line,) = similar_vs_mixed(cases)
    assert line.startswith("Batch of 4: similar sizes 16.0 tok/s")
    assert "group_by_shape on" in line and "similar 50% faster, steadier" in line
    table = batch_section(cases)
    assert [c.strip() for c in table[2].split("|")[1:4]] == ["4", "similar 448x448", "on"]
    assert similar_vs_mixed([_case(1, False, True, [1.0])]) == []


@pytest.mark.slow
def test_batch_suite(pytester: pytest.Pytester):
    result = pytester.runpytest("--mlx-suite", "batch", "--mlx-batch-sizes", "1,2", *SMALL)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*mlxvlm: synthetic:tiny on *, batch*", "| Batch *", "| 1 * similar 448x448 *",
                                 "| 2 * mixed 224x224/576x576 * off *", "Batch of 2: similar sizes * vs mixed *"])
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = [r for r in doc["results"] if r["side"] == "batch"]
    assert [c["resolution"] for c in cases] == ["b1-similar-grouped", "b2-similar-grouped", "b2-mixed-grouped",
                                                "b2-mixed-ungrouped"]
    for case in cases:
        size = case["workload"]["batch"]["size"]
        assert {s["generation_tokens"] for s in case["samples"]} == {4 * size}
        # the work profile is that of the whole batch_generate call, keyed by the batch
        assert case["work"]["key"]["batch"] == size
        assert case["work"]["phases"]["batch"]["primitives"], case["work"]["phases"]


@pytest.mark.slow
def test_a_batch_with_an_unreadable_image_fails_alone(pytester: pytest.Pytester):
    pytester.makepyfile(test_mine="""
        def test_bad_batch(mlx_batch_bench, tmp_path):
            bad = tmp_path / "broken.png"
            bad.write_text("not an image")
            mlx_batch_bench.run(image=[mlx_batch_bench.images[0], str(bad)])

        def test_good_batch(mlx_batch_bench):
            mlx_batch_bench.run()
    """)
    result = pytester.runpytest("--mlx-batch-sizes", "2", "-k", "similar", *SMALL)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*synthetic:tiny b2-similar-grouped: request 2 of 2: cannot open image "
                                 "'*broken.png'*"])
