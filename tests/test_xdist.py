"""pytest-xdist helpers: which tests measure, their group, the ids a worker reports."""

from types import SimpleNamespace

from pytest_mlxvlm.harness.xdist import XDIST_GROUP, grouped_count, lock_for, measures, nodeid


def item(*fixtures: str, lock: str | None = None) -> SimpleNamespace:
    config = SimpleNamespace(workerinput={"mlxvlm_lock": lock} if lock else {})
    return SimpleNamespace(fixturenames=list(fixtures), config=config, nodeid=f"t.py::test[x]@{XDIST_GROUP}")


def test_tests_that_load_a_model_or_use_a_server_measure():
    assert measures(item("mlx_bench", "mlx_model"))
    assert measures(item("mlx_server_bench", "mlx_server"))  # a server's rounds must not overlap either
    assert not measures(item("tmp_path"))


def test_measured_tests_run_under_the_lock_on_workers_only():
    assert lock_for(item("mlx_server", lock="/tmp/x.lock")) == "/tmp/x.lock"
    assert lock_for(item("tmp_path", lock="/tmp/x.lock")) is None
    assert lock_for(item("mlx_model")) is None  # not a worker


def test_group_suffix_and_counts():
    assert nodeid(item("mlx_model")) == "t.py::test[x]"
    assert grouped_count([f"a@{XDIST_GROUP}", "b", f"c@{XDIST_GROUP}"]) == 2
