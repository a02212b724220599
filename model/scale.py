"""Scale information of a block (zoom, latitude, cascade span) and its SCGM scale prompt.

The prompt follows the official SCGM text format, but with the true ground resolution at the
block's latitude and the OGC scale denominator instead of the official equator-only table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Web Mercator ground resolution at the equator at zoom 0 for 256 px tiles (m/px).
EQUATOR_RESOLUTION_Z0 = 156543.03392
# OGC standardized rendering pixel size (m): scale denominator = resolution / pixel size.
OGC_PIXEL_SIZE_M = 0.00028
# Web Mercator is only defined up to this latitude; tiles never lie beyond it.
MAX_LATITUDE = 85.0511287798066
MIN_ZOOM, MAX_ZOOM = 0, 24
SPANS = (0, 2, 4)

# "Examples of areas to represent" per zoom (OpenStreetMap wiki "Zoom levels", as in the
# official dataset code). SCGM was trained on z14..18 only; the other entries let the service
# run z12..19 (and anything in MIN_ZOOM..MAX_ZOOM) with text that still reads sensibly, but
# the model has not seen those prompts in training, so quality there is extrapolation.
# Zooms past 20 reuse the z20 text: nothing finer than a building is named on that page.
_EXAMPLES = {
    0: "whole world",
    1: "whole world",
    2: "subcontinental area",
    3: "largest country",
    4: "largest country",
    5: "large African country",
    6: "large European country",
    7: "small country, US state",
    8: "small country, US state",
    9: "wide area, large metropolitan area",
    10: "metropolitan area",
    11: "city",
    12: "town, or city district",
    13: "village, or suburb",
    14: "village, or suburb",
    15: "small road",
    16: "street",
    17: "block, park, addresses",
    18: "some buildings, trees",
    19: "local highway and crossing details",
    20: "mid-sized building",
}


def area_examples(zoom: int) -> str:
    """The "examples of areas to represent" text of a zoom (z21..24 reuse z20)."""
    _check_zoom(zoom)
    return _EXAMPLES[min(zoom, max(_EXAMPLES))]


def _check_zoom(zoom: int) -> None:
    if isinstance(zoom, bool) or not isinstance(zoom, int):
        raise ValueError(f"zoom must be an int, got {zoom!r}")
    if not MIN_ZOOM <= zoom <= MAX_ZOOM:
        raise ValueError(
            f"zoom {zoom} has no scale information: supported zooms are {MIN_ZOOM}..{MAX_ZOOM}"
        )


@dataclass(frozen=True)
class ScaleInfo:
    """Scale of the zoom being generated (the child zoom of a block) and of its reference.

    span is the cascade reference factor: 0 = no reference (root zoom), 2 = parent tile
    (ref_zoom = zoom - 1), 4 = grandparent tile (ref_zoom = zoom - 2).
    """

    zoom: int
    lat: float = 0.0
    ref_zoom: int | None = None
    span: int = 0

    def __post_init__(self) -> None:
        _check_zoom(self.zoom)
        if not math.isfinite(self.lat) or abs(self.lat) > MAX_LATITUDE:
            raise ValueError(
                f"latitude {self.lat} is outside Web Mercator (|lat| <= {MAX_LATITUDE:.4f})"
            )
        if self.span not in SPANS:
            raise ValueError(f"span must be one of {SPANS}, got {self.span!r}")
        expected = None if self.span == 0 else self.zoom - self.span // 2
        if self.ref_zoom != expected:
            raise ValueError(
                f"span {self.span} at zoom {self.zoom} needs ref_zoom={expected}, "
                f"got {self.ref_zoom}"
            )
        if expected is not None and expected < MIN_ZOOM:
            raise ValueError(f"zoom {self.zoom} has no zoom {self.span // 2} levels above it")

    @classmethod
    def with_span(cls, zoom: int, lat: float = 0.0, span: int = 4) -> ScaleInfo:
        """ScaleInfo with ref_zoom derived from span (0 = no reference)."""
        _check_zoom(zoom)
        ref_zoom = None if span == 0 else zoom - span // 2
        return cls(zoom=zoom, lat=lat, ref_zoom=ref_zoom, span=span)

    @property
    def has_reference(self) -> bool:
        return self.span != 0

    @property
    def ground_resolution(self) -> float:
        """Metres per pixel of a 256 px Web Mercator tile at this zoom and latitude."""
        return EQUATOR_RESOLUTION_Z0 * math.cos(math.radians(self.lat)) / 2**self.zoom

    @property
    def scale_denominator(self) -> float:
        """N of the map scale 1:N, with the OGC 0.28 mm rendering pixel."""
        return self.ground_resolution / OGC_PIXEL_SIZE_M

    def prompt(self) -> str:
        """The SCGM scale text; the reference clauses are left out when there is no reference."""
        parts = ["geographical map tile", f"tile zoom level {self.zoom}"]
        if self.has_reference:
            parts += [f"reference zoom level {self.ref_zoom}", f"reference zoom scale {self.span}X"]
        parts += [
            f"map resolution {self.ground_resolution:.3f}m/pixel",
            f"map scale 1:{round(self.scale_denominator)}",
            f"examples of areas to represent: {area_examples(self.zoom)}",
        ]
        return ", ".join(parts)

    def embedding(self) -> tuple[float, float, float]:
        """Numeric scale features of order 1 for small models without a text tower.

        (zoom / 24, log2(resolution in m/px) / 16, span / 4): the resolution term carries the
        latitude, and 16 keeps z0..24 within about [-1, 1.1].
        """
        return (
            self.zoom / MAX_ZOOM,
            math.log2(self.ground_resolution) / 16.0,
            self.span / 4.0,
        )
