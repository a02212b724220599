"""`mapcascade generate`: run the generator on one imagery tile or block from image files.

A 512x512 input is a block (2x2 tiles of --zoom) and gives a 512x512 map. A 256x256 input is one
tile: it is mirrored into the other three quadrants of a block frame (so the ground resolution
stays that of --zoom and the model sees continuous content, not a blank border), the block is
generated and its top-left quadrant is written, 256x256. A reference is given in the same
frame and size as the imagery (a block reference as worker.reference cuts it, or a tile-frame
reference such as the CSCMG ref_scale_{2,4}_256 files) and is mirrored the same way.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import click
from PIL import Image, ImageOps, UnidentifiedImageError

from app.cli.params import strength_option
from app.store import write_atomic
from app.tiles import TILE_SIZE

BLOCK = 2 * TILE_SIZE  # a block: 2x2 tiles


def _read_image(path: Path, option: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise click.BadParameter(f"{path} is not a readable image ({e})", param_hint=option) from e


def mirror_to_block(tile: Image.Image) -> Image.Image:
    """A 256 tile in the top-left of a 512 block, mirrored into the other quadrants."""
    block = Image.new("RGB", (BLOCK, BLOCK))
    block.paste(tile, (0, 0))
    block.paste(ImageOps.mirror(tile), (TILE_SIZE, 0))
    block.paste(ImageOps.flip(tile), (0, TILE_SIZE))
    block.paste(ImageOps.flip(ImageOps.mirror(tile)), (TILE_SIZE, TILE_SIZE))
    return block


def _write_png(image: Image.Image, out: Path) -> None:
    # An interrupted run never leaves a truncated PNG behind.
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_atomic(out, buf.getvalue())


@click.command("generate")
@click.option(
    "--imagery",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Imagery: a 256x256 tile or a 512x512 block (2x2 tiles) of --zoom.",
)
@click.option("--zoom", required=True, type=int, help="Zoom of the imagery tiles (0..24).")
@click.option(
    "--lat", default=0.0, show_default=True, type=float, help="Latitude (deg) for the scale."
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Cascade reference, same frame and size as --imagery. Omit at the root zoom.",
)
@click.option(
    "--span",
    type=click.Choice(["2", "4"]),
    help="Reference span: 2 = parent tile, 4 = grandparent. Default 4 with --reference.",
)
@click.option(
    "--config",
    "config",
    default="demo",
    show_default=True,
    help="tiny | sd21 | demo | a checkpoint folder.",
)
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (model default).")
@strength_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option(
    "--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"])
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PNG."
)
def generate(
    imagery: Path,
    zoom: int,
    lat: float,
    reference: Path | None,
    span: str | None,
    config: str,
    steps: int | None,
    strength: float,
    seed: int,
    device: str,
    dtype: str,
    out: Path,
) -> None:
    """Generate a map for one imagery tile or block and write it as a PNG."""
    from model import BlockRequest, Generator, ScaleInfo  # torch loads only when needed

    image = _read_image(imagery, "--imagery")
    if image.size not in ((TILE_SIZE, TILE_SIZE), (BLOCK, BLOCK)):
        raise click.BadParameter(
            f"{imagery} is {image.size[0]}x{image.size[1]}; expected 256x256 (a tile) or "
            "512x512 (a block)",
            param_hint="--imagery",
        )
    ref_image = _read_image(reference, "--reference") if reference is not None else None
    if ref_image is not None and ref_image.size != image.size:
        raise click.BadParameter(
            f"{reference} is {ref_image.size[0]}x{ref_image.size[1]}; it must match the "
            f"imagery, {image.size[0]}x{image.size[1]}",
            param_hint="--reference",
        )
    if span is not None and ref_image is None:
        raise click.UsageError("--span needs --reference (without one the root-zoom mode runs)")
    span_value = 0 if ref_image is None else int(span or 4)
    try:
        scale = ScaleInfo.with_span(zoom, lat, span_value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--zoom/--lat") from e

    single_tile = image.size == (TILE_SIZE, TILE_SIZE)
    if single_tile:
        image = mirror_to_block(image)
        ref_image = mirror_to_block(ref_image) if ref_image is not None else None

    started = time.perf_counter()
    try:
        generator = Generator.load(
            config, device=device, dtype=dtype, steps=steps, strength=strength
        )
    except (ValueError, FileNotFoundError) as e:
        raise click.BadParameter(str(e), param_hint="--config") from e
    (result,) = generator.generate([BlockRequest(image, ref_image, scale, seed)])
    if single_tile:
        result = result.crop((0, 0, TILE_SIZE, TILE_SIZE))
    _write_png(result, out)
    click.echo(
        f"wrote {out} ({result.size[0]}x{result.size[1]}, {generator.model_id}, "
        f"{generator.steps} steps, {time.perf_counter() - started:.1f} s)"
    )
