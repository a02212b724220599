"""`mapcascade train` rejects malformed arguments with exit code 2 and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{missing}"], "does not exist"),
        (["--data", "{tmp}", "--steps", "0"], "0 is not in the range x>=1"),
        (["--data", "{tmp}", "--steps", "-3"], "x>=1"),
        (["--data", "{tmp}", "--config", "sd99"], "'sd99' is not one of"),
        (["--data", "{tmp}", "--batch-size", "0"], "x>=1"),
        (["--data", "{tmp}", "--crop", "100"], "not a multiple of 32"),
        (["--data", "{tmp}", "--resume", "--out", "{tmp}/none"], "no checkpoint"),
        (["--data", "{tmp}", "--prediction-type", "x0"], "'x0' is not one of"),
        (["--data", "{tmp}", "--vae-steps", "-1"], "x>=0"),
        (["--data", "{tmp}", "--vae-steps", "1", "--out", "{tmp}/o"], "no autoencoder to train"),
        (["--data", "{tmp}", "--cooldown", "-1"], "x>=0"),
        (["--data", "{tmp}", "--imagery-map-weight", "-0.5"], "x>=0"),
        (["--data", "{tmp}", "--imagery-map-weight", "lots"], "'lots' is not a valid float"),
        (["--data", "{tmp}", "--reference-dropout", "1.5"], "0<=x<=1"),
        (["--data", "{tmp}", "--zoom-out", "-0.1"], "0<=x<=1"),
        (["--data", "{tmp}", "--zoom-out", "2"], "0<=x<=1"),
        (["--data", "{tmp}", "--zoom-out", "half"], "'half' is not a valid float"),
        (["--data", "{tmp}", "--map-head-only"], "needs --imagery-map-weight > 0"),
        (["--data", "{tmp}", "--steps", "10", "--cooldown", "11"], "more than the 10 diffusion"),
        ([], "Missing option '--data'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(tmp=tmp_path, missing=tmp_path / "nowhere") for a in args]
    result = CliRunner().invoke(main, ["train", *filled])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_data_without_tiles_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("tilename\n")
    result = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path), "--config", "tiny", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert "no usable tiles" in result.output


def test_the_cli_offers_exactly_the_registrys_trainable_configs() -> None:
    # `--help` must not import torch, so the CLI names them itself; the registry decides.
    from app.cli.train import TRAIN_CONFIGS
    from model.configs import REGISTRY, TRAINABLE_CONFIGS

    assert TRAIN_CONFIGS == TRAINABLE_CONFIGS
    assert {name: c.learning_rate for name, c in REGISTRY.items()} == {
        "demo": 3e-4, "tiny": 3e-4, "sd21": 5e-5,
    }  # fmt: skip
