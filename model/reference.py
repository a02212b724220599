"""Cascade reference: an already generated coarser map tile, cropped and upsampled to a block.

A block is the 2x2 children (zoom z) of a parent tile P (zoom z-1), drawn as one 512x512 canvas.
- span 2: the reference is P's map tile, upsampled x2.
- span 4: the reference is the quadrant (qx, qy) = (P.x & 1, P.y & 1) of the grandparent tile
  (zoom z-2) that covers P, upsampled x4.
Upsampling is bilinear, as in the official SCGM data code (PIL BILINEAR), so that references
look like the ones the model was trained on.
"""

from __future__ import annotations

from PIL import Image

BLOCK_SIZE = 512


def prepare_reference(
    tile: Image.Image, span: int, quadrant: tuple[int, int] | None = None
) -> Image.Image:
    """Return the RGB 512x512 reference of a block in the block frame.

    tile: the parent map tile (span 2) or the grandparent map tile (span 4); any square size
    (normally 256). quadrant: (qx, qy) in {0, 1}, required for span 4, where qx = P.x & 1 and
    qy = P.y & 1 of the block's parent P; must be None for span 2.
    """
    width, height = tile.size
    if width != height or width < 2:
        raise ValueError(f"reference tile must be square, got {width}x{height}")
    rgb = tile.convert("RGB")
    if span == 2:
        if quadrant is not None:
            raise ValueError("span 2 uses the whole parent tile: quadrant must be None")
        crop = rgb
    elif span == 4:
        if quadrant is None:
            raise ValueError("span 4 needs the quadrant (P.x & 1, P.y & 1) of the grandparent")
        qx, qy = quadrant
        if qx not in (0, 1) or qy not in (0, 1):
            raise ValueError(f"quadrant must be (0|1, 0|1), got {quadrant!r}")
        half = width // 2
        crop = rgb.crop((qx * half, qy * half, (qx + 1) * half, (qy + 1) * half))
    else:
        raise ValueError(f"span must be 2 or 4, got {span!r}")
    return crop.resize((BLOCK_SIZE, BLOCK_SIZE), Image.Resampling.BILINEAR)
