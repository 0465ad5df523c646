"""The nightly dashboard: its files, links, CSV and Markdown, its charts, and the site as a real
headless Chromium renders it (offline, every label inside its chart)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from datetime import datetime, timedelta

import pytest

from pytest_mlxvlm.reports.dashboard import build, commit_links, page_names, recorded_repository
from pytest_mlxvlm.reports.history import repository_url
from pytest_mlxvlm.reports.svgchart import MAX_DRAWN, chart, display, nice_ticks, tick_positions
from pytest_mlxvlm.reports.trends import Series, build_series, detect


def records(levels, cases=("224x224",), repository=None):
    """Nightly sessions of a model, each case's Speed at ``levels[i]`` with five samples."""
    out = []
    for i, level in enumerate(levels):
        entries = []
        for c, resolution in enumerate(cases):
            speed = [level * (1 + d) * (1 - 0.1 * c) for d in (-0.02, -0.01, 0.0, 0.01, 0.02)]
            ttft = [10 / v for v in speed]
            medians = {"end_to_end_tps": speed[2], "generation_tps": speed[2] * 1.2, "ttft_s": ttft[2]}
            entries.append({"model": "org/model-4bit", "case_key": f"tests/test_x.py::test_speed[{resolution}]",
                            "resolution": resolution, "medians": medians,
                            "samples": {"end_to_end_tps": speed, "generation_tps": [v * 1.2 for v in speed],
                                        "ttft_s": ttft}})
        out.append({"schema_version": 1, "date": (datetime(2026, 1, 1, 3) + timedelta(days=i)).isoformat(),
                    "commit": f"{i:02d}" + "ab" * 19, "machine": {"key": "apple-m4-max-128gb"},
                    **({"repository": repository} if repository else {}), "cases": entries})
    return out


STEP = [100.0] * 8 + [70.0] * 6  # a 30% regression at the ninth session


def test_the_site_and_its_files(tmp_path):
    site = build(records(STEP, ("224x224", "448x448"), "git@github.com:org/app.git"), tmp_path, source="h.jsonl",
                 png=False)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    folder = "apple-m4-max-128gb/org--model-4bit"
    assert names == sorted(["index.html", "report.csv", "report.md",
                            *(f"{folder}/test_speed-{r}.html" for r in ("224x224", "448x448"))])
    assert [(s.metric, cp.commits[1][:2]) for s, cp in site.regressions] == [
        ("end_to_end_tps", "08"), ("generation_tps", "08"), ("ttft_s", "08")] * 2
    index = (tmp_path / "index.html").read_text()
    assert index.startswith("<!doctype html>") and "<pre>" not in index
    assert 'href="https://github.com/org/app/commit/08' in index  # the recorded remote, made browsable
    assert "regression -30.0%" in index and f'href="{folder}/test_speed-224x224.html#speed"' in index
    page = (tmp_path / folder / "test_speed-224x224.html").read_text()
    assert page.count("<svg") == 3 and 'href="../../index.html"' in page and "TTFT (ms)" in page
    # offline: no script, no style sheet or font from anywhere, no image from the network
    for html in (index, page):
        assert "<script" not in html and "<link" not in html and "@import" not in html
        assert not re.search(r'src="https?:', html)


def test_csv_has_a_row_per_session_and_series(tmp_path):
    build(records(STEP), tmp_path, png=False)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert len(rows) == 3 * len(STEP)
    speed = [r for r in rows if r["metric"] == "end_to_end_tps"]
    assert [r["session"] for r in speed] == [str(i) for i in range(len(STEP))]
    assert speed[8]["change"] == "regression -30.0%" and speed[7]["change"] == ""
    assert float(speed[0]["q1"]) < float(speed[0]["median"]) < float(speed[0]["q3"])
    assert speed[0]["unit"] == "tok/s" and {r["unit"] for r in rows if r["metric"] == "ttft_s"} == {"s"}


def test_markdown_summary_links_the_pngs_where_they_will_be(tmp_path):
    build(records(STEP), tmp_path, base_url="https://org.github.io/app/perf/")
    folder = tmp_path / "apple-m4-max-128gb" / "org--model-4bit"
    assert sorted(p.name for p in folder.glob("*.png")) == [  # named by model, size and metric
        f"test_speed-224x224-{m}.png" for m in ("decode", "speed", "ttft")]
    text = (tmp_path / "report.md").read_text()
    assert "## What changed" in text and "REGRESSION -30.0% | 07ababa → 08ababa |" in text
    assert ("[PNG](https://org.github.io/app/perf/apple-m4-max-128gb/org--model-4bit/"
            "test_speed-224x224-speed.png)") in text


def test_repository_links():
    assert repository_url("git@github.com:org/app.git") == "https://github.com/org/app"
    assert repository_url("https://x-access-token:SECRET@github.com/org/app.git") == "https://github.com/org/app"
    assert repository_url("ssh://git@gitlab.example.com/group/app.git") == "https://gitlab.example.com/group/app"
    assert repository_url("/srv/git/app") is None and repository_url(None) is None
    assert commit_links("https://github.com/org/app")("abc") == "https://github.com/org/app/commit/abc"
    assert commit_links("https://git.example/-/c/{commit}")("abc") == "https://git.example/-/c/abc"
    assert commit_links(None)("abc") is None
    assert recorded_repository(records([1.0], repository="git@github.com:o/r.git")) == "https://github.com/o/r"


def test_pages_of_cases_of_one_name_stay_apart():
    a = Series("chip", "m", "tests/a.py::test_speed[224x224]", "end_to_end_tps")
    b = Series("chip", "m", "tests/b.py::test_speed[224x224]", "end_to_end_tps")
    names = page_names([a, b])
    assert len(set(names.values())) == 2 and names[a.key[:3]] == "chip/m/test_speed-224x224"
    # models whose file names collide (./ckpt and ../ckpt), or would break a link (#, ?, %)
    c, d = (Series("chip", m, "t.py::test_speed[224x224]", "end_to_end_tps") for m in ("./ckpt", "../ckpt"))
    e = Series("chip", "runs/run#3?x=%20", "t.py::test_speed[224x224]", "end_to_end_tps")
    names = page_names([c, d, e])
    assert len(set(names.values())) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", name) for name in names.values())


def test_axis_ticks_are_round_and_spread():
    assert nice_ticks(43.2, 87.9) == [50.0, 60.0, 70.0, 80.0]
    ticks = tick_positions(10_000)
    assert ticks[0] == 0 and len(ticks) <= 8 and len({b - a for a, b in zip(ticks, ticks[1:-1])}) <= 1
    assert tick_positions(3) == [0, 1, 2]


def test_a_long_history_is_drawn_in_bins():
    (series,) = build_series(records([100.0] * 5000 + [70.0] * 5000), ["end_to_end_tps"])
    detect(series)
    svg = chart(series)
    drawn = re.search(r'<polyline class="median" points="([^"]+)"', svg).group(1).split()
    assert len(drawn) <= MAX_DRAWN and "10000 sessions, drawn in bins of 17" in svg
    assert svg.count("<text") < 60  # a decimated axis: a few dates, not one label per session
    assert [cp.index for cp in series.change_points] == [5000]


def test_ttft_is_shown_in_milliseconds():
    assert (display("ttft_s").unit, display("ttft_s").factor) == ("ms", 1000.0)
    assert display("end_to_end_tps").unit == "tok/s"


def test_png_labels_stay_inside_the_figure():
    """No clipped label: every text the PNG draws lies within the figure."""
    from pytest_mlxvlm.reports.plots import figure, figure_module

    (series,) = [s for s in build_series(records(STEP)) if s.metric == "ttft_s"]
    detect(series)
    fig = figure(series, "org/model-4bit · test_speed[224x224] · TTFT · apple-m4-max-128gb")
    fig.canvas.draw()
    box = fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
             if t.get_text() and t.get_visible()]
    assert any("TTFT (ms)" == t.get_text() for t in texts)
    assert any(t.get_text() == "level ± tolerance (15%)" for t in texts)  # the legend
    for t in texts:
        extent = t.get_window_extent()
        assert box.x0 - 0.5 <= extent.x0 and extent.x1 <= box.x1 + 0.5, t.get_text()
        assert box.y0 - 0.5 <= extent.y0 and extent.y1 <= box.y1 + 0.5, t.get_text()
    figure_module().close(fig)


def chromium() -> str | None:
    """Debian's Chromium (``.ci/run`` installs it), or $PYTEST_MLXVLM_CHROMIUM."""
    return os.environ.get("PYTEST_MLXVLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_dashboard_in_headless_chromium(tmp_path):
    browser_path = chromium()
    if browser_path is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium: .ci/run installs Debian's chromium package (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from PIL import Image

    site = tmp_path / "site"
    build(records(STEP, ("224x224",), "https://github.com/org/app"), site, png=False)
    page_file = site / "apple-m4-max-128gb" / "org--model-4bit" / "test_speed-224x224.html"
    left_the_machine: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route(re.compile(r"^(?!file:).*"), lambda route: (left_the_machine.append(route.request.url),
                                                                   route.abort()))
            page.goto(page_file.as_uri())
            charts = page.locator("svg.chart")
            assert charts.count() == 3
            legend = page.locator("svg.chart").first.locator(".legend-text").all_text_contents()
            assert legend[:3] == ["session median", "interquartile range of its samples", "level ± tolerance (10%)"]
            assert "regression" in legend
            clipped = page.evaluate("""() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
                const box = svg.getBoundingClientRect();
                return [...svg.querySelectorAll('text')].filter(t => {
                    const r = t.getBoundingClientRect();
                    return r.left < box.left - 0.5 || r.top < box.top - 0.5 ||
                           r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5;
                }).map(t => t.textContent);
            })""")
            assert clipped == []
            shot = tmp_path / "speed.png"
            charts.first.screenshot(path=str(shot))
            page.goto((site / "index.html").as_uri())
            assert page.locator("#changes + table tr").count() == 1 + 3  # a header and three changes
            href = page.locator("#changes + table a").first.get_attribute("href")
            assert (site / href.split("#")[0]).is_file()
            page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
        finally:
            browser.close()
    assert left_the_machine == []  # rendered offline
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        width, height = pixels.size
        colours = pixels.getcolors(maxcolors=width * height)
        inked = sum(n for n, c in colours if c != (255, 255, 255))
        reds = sum(n for n, (r, g, b) in colours if r > 150 and g < 90 and b < 90)  # the change point
        blues = sum(n for n, (r, g, b) in colours if b > 120 and r < 80)  # the medians
    assert width >= 900 and inked / (width * height) > 0.03 and reds > 50 and blues > 200


def test_too_few_sessions_are_said_not_shown_as_no_change(tmp_path):
    """Change points are looked for from 6 sessions on: below that, both summaries say so."""
    build(records([100.0, 100.0, 70.0, 70.0]), tmp_path, png=False)
    index = (tmp_path / "index.html").read_text()
    assert ("No change point in any series. 3 of 3 series have fewer than 6 sessions: too few to look for "
            "change points yet.") in index
    assert "too few sessions</span></td></tr>" in index
    text = (tmp_path / "report.md").read_text()
    assert "No change point in any series: 3 of 3 series have fewer than 6 sessions" in text
    build(records(STEP), tmp_path / "long", png=False)
    assert "too few" not in (tmp_path / "long" / "index.html").read_text()


def test_the_dashboard_link_can_point_elsewhere_than_the_pngs(tmp_path):
    """A raw-file base URL serves PNGs but shows HTML as text: --dashboard-url sets the link alone."""
    raw = "https://github.com/org/app/raw/mlxvlm-history/report/"
    build(records(STEP), tmp_path, base_url=raw, dashboard_url="https://github.com/org/app/tree/mlxvlm-history/report")
    text = (tmp_path / "report.md").read_text()
    assert "Dashboard: [https://github.com/org/app/tree/mlxvlm-history/report](https://github.com/org/app/tree/" \
           "mlxvlm-history/report)" in text
    assert f"[PNG]({raw}apple-m4-max-128gb/org--model-4bit/test_speed-224x224-speed.png)" in text
    build(records(STEP), tmp_path / "plain", base_url=raw, png=False)
    assert f"Dashboard: [{raw}index.html]" in (tmp_path / "plain" / "report.md").read_text()
