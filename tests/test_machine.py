"""Machine identity."""

from pytest_mlxvlm import machine


def test_slug():
    assert machine.slug("Apple M4 Max 128gb") == "apple-m4-max-128gb"
    assert machine.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert machine.slug("  ") == "unknown"


def test_identity_on_this_machine_names_chip_backend_and_versions():
    info = machine.identity()
    assert info["backend"] == "cpu"
    assert info["key"].startswith("cpu-") and info["key"].endswith(f"-{info['cores']}c")
    assert info["mlx"] and info["mlx_vlm"] and info["python"]


def test_chip_key_override(monkeypatch):
    info = machine.identity("My Lab M2 Ultra")
    assert info["key"] == "my-lab-m2-ultra"
    assert info["detected_key"] == machine.detect()["key"]
    monkeypatch.setenv(machine.CHIP_ENV, "ci-runner")
    assert machine.identity()["key"] == "ci-runner"
