"""Schedulers by name; the official respacing of timesteps for the ancestral sampler."""

from __future__ import annotations

import pytest

from model.schedulers import SCHEDULER_NAMES, make_scheduler, respaced_timesteps


def test_respacing_matches_iddpm_space_timesteps() -> None:
    # IDDPM: stride (1000 - 1) / (n - 1), rounded, both ends included.
    assert respaced_timesteps(4) == [999, 666, 333, 0]
    fifty = respaced_timesteps(50)
    assert len(fifty) == 50 and fifty[0] == 999 and fifty[-1] == 0
    assert fifty[-2] == round(999 / 49)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_builds_with_the_requested_steps(name: str) -> None:
    scheduler = make_scheduler(name, 5)
    assert len(scheduler.timesteps) == 5
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_unknown_scheduler_raises() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("heun", 5)
