"""`mapcascade generate` driven through click's runner on the tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli.generate import generate, mirror_to_block
from tests.model.helpers import noise_image


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(generate, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def block_png(tmp_path: Path) -> Path:
    path = tmp_path / "block.png"
    noise_image(1).save(path)
    return path


@pytest.fixture
def tile_png(tmp_path: Path) -> Path:
    path = tmp_path / "tile.png"
    noise_image(1, 256).save(path)
    return path


def test_block_with_reference_writes_a_512_png(tmp_path: Path, block_png: Path) -> None:
    ref = tmp_path / "ref.png"
    noise_image(2).save(ref)
    out = tmp_path / "out" / "map.png"
    code, output = run(
        "--imagery", block_png, "--zoom", "18", "--lat", "47", "--reference", ref,
        "--config", "tiny", "--seed", "3", "--out", out,
    )  # fmt: skip
    assert code == 0, output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (512, 512) and image.mode == "RGB"
    assert "tiny-" in output


def test_single_tile_root_zoom_writes_a_256_png(tmp_path: Path, tile_png: Path) -> None:
    out = tmp_path / "tile-map.png"
    code, output = run("--imagery", tile_png, "--zoom", "14", "--config", "tiny", "--out", out)
    assert code == 0, output
    with Image.open(out) as image:
        assert image.size == (256, 256)


def test_mirror_to_block_keeps_the_tile_top_left() -> None:
    tile = noise_image(9, 256)
    block = mirror_to_block(tile)
    assert block.size == (512, 512)
    assert block.crop((0, 0, 256, 256)).tobytes() == tile.tobytes()
    assert block.getpixel((256, 0)) == tile.getpixel((255, 0))  # mirrored across the seam


def _assert_usage_error(code: int, output: str, words: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    assert words in output


def test_wrong_size_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.png"
    Image.new("RGB", (300, 200)).save(path)
    code, output = run("--imagery", path, "--zoom", "18", "--out", tmp_path / "o.png")
    _assert_usage_error(code, output, "300x200")


def test_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "not-an-image.png"
    path.write_text("hello")
    code, output = run("--imagery", path, "--zoom", "18", "--out", tmp_path / "o.png")
    _assert_usage_error(code, output, "not a readable image")
    code, output = run("--imagery", tmp_path / "missing.png", "--zoom", "18", "--out", "o.png")
    _assert_usage_error(code, output, "does not exist")


@pytest.mark.parametrize("zoom", ["25", "-3"])
def test_zoom_without_scale_is_a_usage_error(tmp_path: Path, block_png: Path, zoom: str) -> None:
    code, output = run("--imagery", block_png, "--zoom", zoom, "--out", tmp_path / "o.png")
    _assert_usage_error(code, output, "no scale information")


def test_reference_of_another_size_is_a_usage_error(
    tmp_path: Path, block_png: Path, tile_png: Path
) -> None:
    code, output = run(
        "--imagery", block_png, "--reference", tile_png, "--zoom", "18", "--out", tmp_path / "o.png"
    )
    _assert_usage_error(code, output, "must match the imagery")


def test_span_without_reference_and_missing_demo_are_usage_errors(
    tmp_path: Path, block_png: Path
) -> None:
    code, output = run("--imagery", block_png, "--zoom", "18", "--span", "2", "--out", "o.png")
    _assert_usage_error(code, output, "--span needs --reference")
    code, output = run("--imagery", block_png, "--zoom", "18", "--config", "nope", "--out", "o.png")
    _assert_usage_error(code, output, "neither a configuration")
    code, output = run("--imagery", block_png, "--zoom", "18", "--config", "tiny",
                       "--strength", "0.5", "--out", "o.png")  # fmt: skip
    _assert_usage_error(code, output, "needs a model with a map head")
    code, output = run("--imagery", block_png, "--zoom", "18", "--strength", "2", "--out", "o.png")
    _assert_usage_error(code, output, "0<x<=1")
    assert not (tmp_path / "o.png").exists()
