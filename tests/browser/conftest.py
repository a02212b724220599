"""The `service` the viewer tests open their pages on: a real `mapcascade serve` on an empty
store with the module's `layers`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# live_service's waits assert: registered before its first import, pytest rewrites them, and a
# failure shows the values as well as the message.
pytest.register_assert_rewrite("live_service")

from live_service import DEMO_AND_KAMPALA_LAYERS, serve  # noqa: E402


@pytest.fixture
def layers() -> list[dict]:
    """The layers `service` serves; a module with other layers overrides this fixture."""
    return DEMO_AND_KAMPALA_LAYERS


@pytest.fixture
def service(tmp_path: Path, layers: list[dict]) -> Iterator[str]:
    """`mapcascade serve` on an empty store; its whole process group is stopped afterwards."""
    layers_file = tmp_path / "layers.yml"
    layers_file.write_text(yaml.safe_dump({"layers": layers}))
    with serve(tmp_path / "data", layers_file) as base:
        yield base
