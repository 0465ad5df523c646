"""Work changes in a history: exact, the commit named, and the report command's verdict."""

import json

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.gate.workhistory import new_work_regressions, work_changes, work_section
from pytest_mlxvlm.measure.fake import fake_profile
from pytest_mlxvlm.results import Sample

SAMPLE = Sample(time_s=1, ttft_s=0.1, preprocess_s=0, prefill_s=0.1, prompt_tokens=90, cached_tokens=0,
                image_tokens=64, generation_tokens=8, prompt_tps=900, generation_tps=70, end_to_end_tps=8,
                peak_memory=1, token_ids=[1] * 8)


def history(works, chip="k"):
    """One session a commit, each case's work as given (None: no profile recorded)."""
    return [{"schema_version": 1, "date": f"2026-11-{i + 1:02d}", "commit": f"c{i:02d}", "machine": {"key": chip},
             "cases": [{"model": "fake:a", "case_key": "t[224x224]", "resolution": "224x224",
                        "medians": {"end_to_end_tps": 100.0}, **({"work": w} if w else {})}]}
            for i, w in enumerate(works)]


def work(extra="", version="1"):
    return fake_profile("fake:a", SAMPLE, extra, version)


def test_the_commit_that_added_work_is_named_and_only_it():
    changes = work_changes(history([work(), work(), work(), work("decode_step:Multiply=60"),
                                    work("decode_step:Multiply=60")]))
    assert [(c.verdict, c.commit, c.previous_commit) for c in changes] == [("added", "c03", "c02")]
    assert changes[0].line() == ("WORK ADDED at commit c03 (after c02, 2026-11-04): k fake:a t[224x224]: "
                                 "+60 Multiply per decode step")
    assert new_work_regressions(changes) == [changes[0].line()]
    assert work_section(changes)[0] == "## Work profile changes (exact)"


def test_removed_work_after_added_clears_the_regression_and_keys_restart():
    changes = work_changes(history([work(), work("decode_step:Add=1"), work(), work(version="2"), work(version="2")]))
    assert [(c.verdict, c.commit) for c in changes] == [("added", "c01"), ("removed", "c02"),
                                                        ("not comparable", "c03")]
    assert "mlx 1 → 2" in changes[-1].description
    assert new_work_regressions(changes) == []


def test_sessions_without_a_profile_and_other_chips_are_skipped():
    records = history([work(), None, work()]) + history([work("decode_step:Add=1")] * 2, chip="other")
    assert work_changes(records) == []


def test_the_report_names_the_commit_and_fails_on_a_new_work_regression(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history([work()] * 3 + [work("prefill:Convolution=1")])))
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert "WORK ADDED at commit c03 (after c02, 2026-11-04): k fake:a t[224x224]: +1 Convolution in prefill" in out
    assert "new work regression: WORK ADDED at commit c03" in out
    assert "## Work profile changes (exact)" in (tmp_path / "r" / "report.md").read_text()
    index = (tmp_path / "r" / "index.html").read_text()  # the dashboard's summary page
    assert '<h2 id="work">Work profile changes (exact)</h2>' in index
    assert "<li>WORK ADDED at commit c03 (after c02, 2026-11-04): k fake:a t[224x224]: +1 Convolution in prefill" in index
