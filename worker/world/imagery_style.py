"""Materials of the imagery renderer: base colours per feature kind, per-feature variation and
texture amplitudes — so imagery -> map is not a one-colour-per-class lookup."""

from __future__ import annotations

import numpy as np

from worker.world.noise import hash_unit

RGB = tuple[int, int, int]

GROUND, GRASS, WOOD, WATER, ASPHALT, ROOF, FIELD, PAVING, CROWN, BALLAST, MARKING = range(11)

# Texture amplitude per material: (low 20-90 m, mid 2.5-9 m, fine 0.6-1.2 m, pixel grain).
TEXTURE = np.array(
    [
        (0.10, 0.08, 0.06, 0.03),  # ground
        (0.16, 0.10, 0.08, 0.03),  # grass
        (0.10, 0.40, 0.18, 0.03),  # wood: crowns read as mid-scale blobs
        (0.06, 0.03, 0.02, 0.02),  # water
        (0.05, 0.04, 0.07, 0.05),  # asphalt
        (0.04, 0.03, 0.06, 0.03),  # roof
        (0.10, 0.06, 0.05, 0.03),  # field (+ furrow stripes)
        (0.06, 0.05, 0.09, 0.05),  # paving
        (0.05, 0.28, 0.16, 0.03),  # tree crown
        (0.05, 0.10, 0.16, 0.06),  # ballast
        (0.02, 0.02, 0.05, 0.03),  # marking
    ],
    dtype=np.float32,
)

ROOFS: list[RGB] = [
    (148, 72, 60),  # red tile
    (122, 92, 74),  # brown
    (112, 112, 118),  # grey sheet
    (78, 78, 84),  # dark felt
    (188, 182, 170),  # light concrete
    (96, 132, 114),  # copper green
    (160, 150, 130),  # sand
    (58, 60, 66),  # black tar
]
FIELDS: list[RGB] = [(176, 164, 104), (118, 140, 70), (140, 112, 82), (152, 160, 92), (98, 122, 58)]

AREA_BASE: dict[str, tuple[RGB, int]] = {
    "landuse:builtup": ((146, 141, 131), PAVING),
    "grass": ((98, 128, 62), GRASS),
    "park": ((92, 124, 60), GRASS),
    "wood": ((52, 76, 42), WOOD),
    "water": ((38, 64, 76), WATER),
    "pedestrian": ((170, 163, 152), PAVING),
    "parking": ((108, 108, 110), ASPHALT),
}
ROAD_BASE: dict[str, tuple[RGB, int]] = {
    "road:primary": ((70, 70, 74), ASPHALT),
    "road:secondary": ((76, 76, 80), ASPHALT),
    "road:tertiary": ((84, 84, 86), ASPHALT),
    "road:residential": ((90, 89, 90), ASPHALT),
    "road:service": ((102, 100, 98), ASPHALT),
    "road:footway": ((162, 156, 146), PAVING),
}
CROWN_COLOUR: RGB = (58, 86, 44)
BALLAST_COLOUR: RGB = (112, 102, 92)
RAIL_COLOUR: RGB = (46, 42, 40)
MARKING_COLOUR: RGB = (226, 226, 214)


def jitter(rgb: RGB, fid: int, amount: float, salt: int = 0) -> RGB:
    """Vary a colour per feature (brightness and a little hue), fixed by the feature id."""
    a, b = hash_unit(fid, 17 + salt), hash_unit(fid, 29 + salt)
    k = 1 + amount * (2 * float(a) - 1)
    warm = amount * 0.5 * (2 * float(b) - 1)
    r, g, bl = rgb
    return (
        int(np.clip(r * k * (1 + warm), 0, 255)),
        int(np.clip(g * k, 0, 255)),
        int(np.clip(bl * k * (1 - warm), 0, 255)),
    )


def roof_colour(fid: int) -> RGB:
    base = ROOFS[int(hash_unit(fid, 3) * len(ROOFS))]
    return jitter(base, fid, 0.12)


def field_colour(fid: int) -> RGB:
    return jitter(FIELDS[int(hash_unit(fid, 5) * len(FIELDS))], fid, 0.08)


def building_height_m(fid: int, given: float) -> float:
    """Height for shading and shadows: the feature's own when set, else 8-30 m by id."""
    return given if given > 0 else 8.0 + 22.0 * float(hash_unit(fid, 7))
