"""Public test helpers: the exact fake engine and the deliberately broken cache engines.

Register the fake engine from a conftest.py::

    from pytest_mlxvlm.testing import FakeEngine

    def pytest_configure(config):
        config.pluginmanager.register(FakeEngine(decode_tps=100.0), "fake-engine")

and run with ``--mlx-model fake:<name>`` (the code lives in ``measure/fake.py``).
"""

from .measure.fake import (
    CONFTEST,
    PREFIX,
    AlwaysHitEngine,
    BrokenCacheEngines,
    FakeEngine,
    NeverHitEngine,
    PromptKeyedEngine,
    image_tokens,
)

__all__ = ["CONFTEST", "PREFIX", "AlwaysHitEngine", "BrokenCacheEngines", "FakeEngine", "NeverHitEngine",
           "PromptKeyedEngine", "image_tokens"]
