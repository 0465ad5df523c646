"""Each side runs its own code: an app repository's tests under the A/B mode run in the base's
and the head's workers, each from its own checkout (fixtures, workload, assertions)."""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from pytest_mlxvlm.harness.sidebyside import NotInThisProcess, workload_changes
from pytest_mlxvlm.testing import CONFTEST

APP = 'PROMPT = "What is in this picture?"\nSIZE = 224\n'
LONG = "What is in this picture? " * 20

CONFTEST_APP = CONFTEST + textwrap.dedent('''
    import pytest

    @pytest.fixture(autouse=True)
    def reads_the_model(mlx_model):
        """An app's fixture that touches the loaded model (the fake engine holds none)."""
        return getattr(mlx_model.model, "language_model", None)
''')

TESTS = textwrap.dedent('''
    from PIL import Image

    import myapp

    def test_describe(mlx_bench):
        result = mlx_bench.run(image=Image.new("RGB", (myapp.SIZE, myapp.SIZE)), prompt=myapp.PROMPT)
        assert result.summary("prompt_tokens").median < myapp.LIMIT  # this side's own figures

    def test_uses_the_model_here(mlx_model):
        assert mlx_model.model.language_model is not None
''')


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def app(pytester: pytest.Pytester) -> Path:
    """An app repository: a prompt and an image size in ``myapp``, a test that measures them."""
    root = pytester.path
    (root / "myapp.py").write_text(APP + "LIMIT = 1000\n")
    (root / "conftest.py").write_text(CONFTEST_APP)
    (root / "test_app.py").write_text(TESTS)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    return root


AB = ["--mlx-model", "fake:m", "--mlx-resolutions", "224x224", "--mlx-ab-pairs", "2:8", "-p", "no:cacheprovider",
      "--mlx-ab-base", "HEAD", "--mlx-json", "ab.json", "-rfEs", "--mlx-suite", "off"]


def test_a_head_that_changes_the_apps_prompt_and_image_is_measured_per_side(pytester, app):
    (app / "myapp.py").write_text(f"PROMPT = {LONG.strip()!r}\nSIZE = 448\nLIMIT = 1000\n")
    result = pytester.runpytest(*AB)
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*A/B workload-changed in test_app::test_describe[[]224x224[]] (fake:m on *)*",
        "*prompt: base 'What is in this picture?' (24 characters), "
        "head 'What is in this picture? What*' (499 characters)",
        "*image: base 224x224 (pixels *), head 448x448 (pixels *)",
        "*prompt_tokens: base 90, head 317",
        "*image_tokens: base 64, head 196",
    ])
    # a test that does not measure runs here: its fixture that uses the model fails in one line,
    # no AttributeError on None
    result.stdout.fnmatch_lines(["*ERROR at setup of test_uses_the_model_here*",
                                 "mlx_model.model.language_model: in the A/B mode the model is loaded in the "
                                 "base's and the head's workers, not in this process; *"])
    assert "AttributeError" not in result.stdout.str()
    doc = json.loads((app / "ab.json").read_text())
    sides = {r["side"]: r for r in doc["results"]}
    assert sides["base"]["workload"]["prompt"] == "What is in this picture?"
    assert sides["head"]["workload"]["prompt"] == LONG.strip()
    # measured per side: each side's own prompt, image and time to first token
    assert sides["base"]["summary"]["prompt_tokens"]["median"] == 90
    assert sides["head"]["summary"]["prompt_tokens"]["median"] == 317
    assert sides["head"]["summary"]["ttft_s"]["median"] > 3 * sides["base"]["summary"]["ttft_s"]["median"]


def test_unchanged_code_passes_and_each_side_asserts_on_its_own_case(pytester, app):
    (app / "test_twice.py").write_text("def test_twice(mlx_bench):\n    mlx_bench.run()\n")
    git(app, "add", "test_twice.py")
    git(app, "commit", "-qm", "one case")
    (app / "test_twice.py").write_text("def test_twice(mlx_bench):\n    mlx_bench.run()\n    mlx_bench.run()\n")
    (app / "myapp.py").write_text(APP + "LIMIT = 50\n")  # the head's own assertion fails on its case
    (app / "test_new.py").write_text("def test_new(mlx_bench):\n    mlx_bench.run()\n")
    result = pytester.runpytest(*AB, "-k", "not uses_the_model")
    result.assert_outcomes(failed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "*mlxvlm: A/B workload changed in test_twice.py::test_twice[[]fake:m-224x224[]]: the head's test measures "
        "more cases than the base's (whose test ended after 1 case(s))"])
    result.stdout.fnmatch_lines([
        "mlxvlm: test_app.py::test_describe[[]fake:m-224x224[]] (the head's code, in its worker): failed: "
        "AssertionError: assert 90.0 < 50",
        "*SKIPPED*mlxvlm: A/B: test_new.py::test_new[[]fake:m-224x224[]]: test_new.py does not exist at the base "
        "(a test the head adds): nothing to compare",
    ])
    doc = json.loads((app / "ab.json").read_text())
    head = next(r for r in doc["results"] if r["side"] == "head")
    assert head["comparison"]["status"] in ("pass", "inconclusive") and head["workload"]["per_side"]


def test_an_ini_override_on_the_command_line_reaches_both_sides(pytester, app):
    """``-o mlx_max_tokens=8`` is given on this command line as much as ``--mlx-max-tokens 8``:
    both sides' sessions measure 8 tokens, as the progress line says."""
    result = pytester.runpytest(*AB, "-o", "mlx_max_tokens=8", "-k", "test_describe")
    result.stdout.fnmatch_lines(["*test_describe *8 tokens each*"])
    doc = json.loads((app / "ab.json").read_text())
    sides = {r["side"]: r for r in doc["results"]}
    assert {side: r["summary"]["generation_tokens"]["median"] for side, r in sides.items()} == {"base": 8, "head": 8}


def test_workload_changes_name_each_difference_with_both_values(tmp_path):
    from PIL import Image

    for name, size, colour in (("a", 224, "red"), ("b", 224, "blue"), ("c", 448, "red")):
        Image.new("RGB", (size, size), colour).save(tmp_path / f"{name}.png")
    same = {"prompt": "p", "image": str(tmp_path / "a.png"), "max_tokens": 8}
    assert workload_changes(same, dict(same)) == {}
    changed = workload_changes(same, {"prompt": "p q", "image": str(tmp_path / "c.png"), "max_tokens": 16,
                                      "generate_kwargs": {"repetition_penalty": 1.1}})
    assert changed["prompt"] == ("'p' (1 characters)", "'p q' (3 characters)")
    assert changed["image"][0].startswith("224x224") and changed["image"][1].startswith("448x448")
    assert changed["max_tokens"] == (8, 16) and changed["repetition_penalty"] == ("unset", 1.1)
    recoloured = workload_changes(same, {**same, "image": str(tmp_path / "b.png")})["image"]
    assert recoloured[0] != recoloured[1] and recoloured[1].startswith("224x224 (pixels ")


def test_a_model_that_lives_in_workers_fails_in_one_line():
    model = NotInThisProcess("mlx_model.model", "it is elsewhere")
    with pytest.raises(pytest.fail.Exception, match=r"^mlx_model.model.language_model: it is elsewhere$"):
        model.language_model  # noqa: B018
    assert getattr(model, "__wrapped__", None) is None and "not in this process" in repr(model)


@pytest.mark.slow
def test_an_app_whose_head_lengthens_its_prompt_on_a_real_model(pytester):
    """The issue's app repository on synthetic:tiny: the head commit makes ``myapp.PROMPT`` 20x
    longer; an autouse fixture reads ``mlx_model.model.language_model``. Each side measures its
    own prompt (barrier pairs, a real first-token hold), and the case is a changed workload."""
    root = pytester.path
    (root / "myapp.py").write_text('PROMPT = "Describe this picture in detail. " * 4\n')
    (root / "conftest.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.fixture(autouse=True)
        def language_model(mlx_model):
            return mlx_model.model.language_model
    '''))
    (root / "test_app.py").write_text(textwrap.dedent('''
        import myapp

        def test_describe(mlx_bench):
            mlx_bench.run(prompt=myapp.PROMPT)
    '''))
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    (root / "myapp.py").write_text('PROMPT = "Describe this picture in detail. " * 80\n')
    git(root, "commit", "-qam", "head: a prompt 20x longer")
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224", "--mlx-max-tokens",
                                "4", "--mlx-ab-pairs", "3:7", "--mlx-ab-base", "HEAD~1", "--mlx-ab-order", "barrier",
                                "--mlx-suite", "off", "-p", "no:cacheprovider", "--mlx-json", "ab.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*A/B workload-changed in test_app::test_describe[[]224x224[]]*",
                                 "*prompt: base 'Describe this picture in detail. Describe this *' (132 "
                                 "characters), head *(2640 characters)",
                                 "*prompt_tokens: base *, head *", "*3 pairs (barrier) in * s, stopped: settled*"])
    # what a change at once means is said where the order is named
    assert "Decode and Speed at once: on a shared device their change can read larger" in result.stdout.str()
    results = {r["side"]: r for r in json.loads((root / "ab.json").read_text())["results"]}
    sides = {side: r["summary"] for side, r in results.items()}
    assert sides["head"]["prompt_tokens"]["median"] > sides["base"]["prompt_tokens"]["median"] + 300
    # each side prefilled its own prompt (here about 60 ms more for the head's, on ~150 ms): the
    # fastest of each side's TTFTs, since a loaded machine's noise only ever adds time
    ttft = {side: [x["ttft_s"] for x in r["samples"]] for side, r in results.items()}
    assert min(ttft["head"]) > min(ttft["base"]), ttft
    assert sides["head"]["image_tokens"]["median"] == sides["base"]["image_tokens"]["median"]
