"""Cartographic style of the world's truth maps: a small flat palette (so every pixel can be
classified back to a class), draw order, road widths and the zoom generalisation table."""

from __future__ import annotations

RGB = tuple[int, int, int]

# Flat colours, loosely after OSM Carto, spaced so nearest-colour classification is robust.
BACKGROUND: RGB = (242, 239, 233)
BUILTUP: RGB = (226, 222, 220)  # settlement tint (landuse, and buildings at z12-14)
BUILDING: RGB = (214, 194, 178)
BUILDING_LINE: RGB = (184, 164, 150)
WATER: RGB = (170, 211, 223)
PARK: RGB = (200, 240, 196)
GRASS: RGB = (206, 232, 172)
WOOD: RGB = (166, 204, 150)
TREE: RGB = (140, 186, 122)
FARMLAND: RGB = (232, 236, 200)
CASING: RGB = (150, 150, 166)
ROAD_MAJOR: RGB = (252, 210, 160)
ROAD_SECONDARY: RGB = (245, 237, 150)
ROAD_MINOR: RGB = (255, 255, 255)
FOOTWAY: RGB = (236, 130, 118)
PEDESTRIAN: RGB = (218, 218, 232)
RAIL: RGB = (118, 118, 124)

CLASSES = ("background", "road", "building", "water", "vegetation")

# Every colour the map renderer paints, grouped by the class it stands for. The IoU metric
# classifies each pixel of a generated map by its nearest colour here.
CLASS_COLOURS: dict[str, list[RGB]] = {
    "background": [BACKGROUND, BUILTUP],
    "road": [CASING, ROAD_MAJOR, ROAD_SECONDARY, ROAD_MINOR, FOOTWAY, PEDESTRIAN, RAIL],
    "building": [BUILDING, BUILDING_LINE],
    "water": [WATER],
    "vegetation": [PARK, GRASS, WOOD, TREE, FARMLAND],
}

# The class each feature kind is drawn as (labels of some classes only keep these kinds).
KIND_CLASS: dict[str, str] = {
    "landuse:builtup": "background",
    "parking": "background",
    "building": "building",
    "water": "water",
    "river": "water",
    "pedestrian": "road",
    "rail": "road",
    **{k: "vegetation" for k in ("farmland", "grass", "park", "wood", "tree", "tree_row")},
    **{k: "road" for k in ("road:footway", "road:service", "road:residential", "road:tertiary",
                           "road:secondary", "road:primary")},
}  # fmt: skip

# Polygon fills by feature kind (map style).
AREA_FILL: dict[str, RGB] = {
    "landuse:builtup": BUILTUP,
    "farmland": FARMLAND,
    "grass": GRASS,
    "park": PARK,
    "wood": WOOD,
    "water": WATER,
    "pedestrian": PEDESTRIAN,
    "building": BUILDING,
}

# Draw order: lower first. Feature queries sort by this so overlaps stack the same everywhere.
DRAW_ORDER: dict[str, int] = {
    "landuse:builtup": 0,
    "farmland": 1,
    "grass": 2,
    "park": 3,
    "wood": 4,
    "water": 5,
    "river": 6,
    "pedestrian": 7,
    "parking": 7,
    "building": 8,
    "tree_row": 9,
    "rail": 10,
    "road:footway": 11,
    "road:service": 12,
    "road:residential": 13,
    "road:tertiary": 14,
    "road:secondary": 15,
    "road:primary": 16,
    "tree": 21,
}

ROAD_KINDS = (
    "road:footway",
    "road:service",
    "road:residential",
    "road:tertiary",
    "road:secondary",
    "road:primary",
)
ROAD_FILL: dict[str, RGB] = {
    "road:footway": FOOTWAY,
    "road:service": ROAD_MINOR,
    "road:residential": ROAD_MINOR,
    "road:tertiary": ROAD_MINOR,
    "road:secondary": ROAD_SECONDARY,
    "road:primary": ROAD_MAJOR,
}
# Carriageway width on the ground (metres), used by the imagery and as the map's floor at z18+.
ROAD_WIDTH_M: dict[str, float] = {
    "road:footway": 2.5,
    "road:service": 5.0,
    "road:residential": 8.0,
    "road:tertiary": 10.0,
    "road:secondary": 13.0,
    "road:primary": 17.0,
}
# Cartographic fill width in pixels at z16; it grows x1.6 per zoom level (not x2: maps exaggerate
# roads when zoomed out and understate them when zoomed in).
ROAD_WIDTH_Z16: dict[str, float] = {
    "road:footway": 1.0,
    "road:service": 2.5,
    "road:residential": 4.0,
    "road:tertiary": 5.5,
    "road:secondary": 7.0,
    "road:primary": 8.5,
}

# Generalisation after the CSCMG zoom table: z14 settlements and main roads, z15 small roads,
# z16 streets, z17 blocks and parks, z18+ individual buildings and trees.
MIN_ZOOM: dict[str, int] = {
    "landuse:builtup": 12,
    "farmland": 12,
    "grass": 14,
    "park": 13,
    "wood": 12,
    "water": 12,
    "river": 12,
    "road:primary": 12,
    "road:secondary": 13,
    "road:tertiary": 14,
    "road:residential": 15,
    "rail": 14,
    "road:service": 16,
    "pedestrian": 16,
    "parking": 99,  # paved but drawn as background, as OSM Carto nearly does
    "road:footway": 17,
    "tree_row": 17,
    "building": 12,  # as settlement tint below BUILDING_BLOCK_ZOOM
    "tree": 18,
}
BUILDING_BLOCK_ZOOM = 15  # z15-16: buildings merged into blocks, no outlines
BUILDING_SINGLE_ZOOM = 18  # z18+: each building with its outline (z17: fills only)
MIN_AREA_PX = 12.0  # areas smaller than this many pixels at a zoom are generalised away


def road_width_px(kind: str, z: int, ground_m_per_px: float) -> float:
    """Fill width of a road line in output pixels at zoom z."""
    carto = ROAD_WIDTH_Z16[kind] * 1.6 ** (z - 16)
    if z >= 18 and kind != "road:footway":
        carto = max(carto, 0.8 * ROAD_WIDTH_M[kind] / ground_m_per_px)
    return max(carto, 0.8)


def casing_px(kind: str, z: int) -> float:
    """Extra width of the casing (both sides together); none for paths or at small scales."""
    if kind == "road:footway" or z < 15:
        return 0.0
    return 1.0 if z < 17 else 3.0
