"""Schedulers by name; the official respacing of timesteps for the ancestral sampler."""

from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_takes_the_prediction_type(name: str) -> None:
    scheduler = make_scheduler(name, 5, "v_prediction")
    assert scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="unknown prediction type"):
        make_scheduler(name, 5, "sample")


def test_ddim_one_step_with_the_true_velocity_returns_x0() -> None:
    scheduler = make_scheduler("ddim", 1, "v_prediction")
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 8, generator=generator)
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    t = scheduler.timesteps[0]
    noisy = scheduler.add_noise(x0, noise, t[None])
    velocity = scheduler.get_velocity(x0, noise, t[None])
    out = scheduler.step(velocity, t, noisy).pred_original_sample
    assert torch.allclose(out, x0, atol=1e-4)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_sampling_starts_at_the_noisiest_training_step(name: str) -> None:
    # Pure noise is x_999; a sampler that starts lower misreads it (and 1 step would be t=1).
    for steps in (1, 4, 12):
        assert int(make_scheduler(name, steps).timesteps[0]) == 999
