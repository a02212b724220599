"""Layer settings: the context margin a layer draws around each block, its sampling strength."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Layer, demo_layer


def layer(**fields: object) -> Layer:
    return Layer.model_validate({**demo_layer().model_dump(), **fields})


@pytest.mark.parametrize("margin", [0, 32, 64, 256])
def test_margins_in_steps_of_32_are_taken(margin: int) -> None:
    assert layer(context_margin=margin).context_margin == margin


@pytest.mark.parametrize(
    ("margin", "message"),
    [(48, "multiple of 32"), (-32, "greater than or equal to 0"), (288, "less than or equal")],
)
def test_other_margins_are_refused_with_the_reason(margin: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        layer(context_margin=margin)


def test_the_demo_layer_draws_64_px_of_context() -> None:
    assert demo_layer().context_margin == 64


@pytest.mark.parametrize(
    ("strength", "message"),
    [(0, "greater than 0"), (-0.5, "greater than 0"), (1.5, "less than or equal to 1"),
     ("half", "valid number")],
)  # fmt: skip
def test_strengths_outside_0_to_1_are_refused(strength: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        layer(strength=strength)
    assert layer(strength=0.5).strength == 0.5 and demo_layer().strength == 1.0
