"""BlockRequest: what the generator needs to draw one 512x512 block (2x2 tiles of one zoom)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from model.scale import ScaleInfo

BLOCK_SIZE = 512  # px of a block: the 2x2 tiles of one zoom the generator draws at once


@dataclass(frozen=True)
class BlockRequest:
    """One block, optionally framed by `margin` px of context on every side: the model draws
    the whole frame and the generator returns its 512x512 centre, so the block's edges are
    drawn knowing what lies beyond them. The caller handles no-data; the model just sees RGB.
    """

    imagery: Image.Image  # RGB, the frame: 512 + 2 * margin square
    reference: Image.Image | None  # RGB, the same frame; None at the root zoom
    scale: ScaleInfo  # of the child zoom
    noise_seed: int  # of the starting noise (Block.noise_seed); not pre-seeding
    margin: int = 0
    # The frame's top-left in global pixels of scale.zoom. Given, the noise is drawn per world
    # tile (model.pipeline.anchored_noise): frames that overlap start from the same noise there.
    origin: tuple[int, int] | None = None
