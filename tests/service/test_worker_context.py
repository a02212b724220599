"""The worker's per-process state: a model is loaded once, whatever the layers that use it."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from worker.context import WorkerContext


def test_layers_that_share_a_model_share_its_one_loaded_copy(tmp_path: Path) -> None:
    """The embedded layers both use the demo model with their own sampling settings (demo:
    the model's 2 steps at strength 1; banepa: its own steps and strength < 1): one copy of the
    weights."""
    ctx = WorkerContext(Settings(data_dir=tmp_path))
    demo, banepa = ctx.generator(ctx.layer("demo")), ctx.generator(ctx.layer("banepa"))
    assert demo.pipeline is banepa.pipeline and demo.model_id == banepa.model_id
    assert (demo.steps, demo.strength) == (2, 1.0)
    layer = ctx.layer("banepa")
    assert (banepa.steps, banepa.strength) == (layer.steps, layer.strength)
    assert banepa.strength < 1 and banepa.steps != demo.steps
    assert ctx.generator(ctx.layer("demo")).pipeline is demo.pipeline
