"""BlockRequest: what the generator needs to draw one 512x512 block (2x2 tiles of one zoom)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from model.scale import ScaleInfo


@dataclass(frozen=True)
class BlockRequest:
    """One block. The caller handles no-data (transparent) imagery; the model just sees RGB."""

    imagery: Image.Image  # RGB 512x512, the 2x2 child-zoom imagery tiles of the block
    reference: Image.Image | None  # RGB 512x512 in the block frame, None at the root zoom
    scale: ScaleInfo  # of the child zoom
    seed: int
