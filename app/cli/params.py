"""The command line's shared parameters: one parser each for a bbox and a zoom range, and the
sampling strength option of the commands that generate."""

from __future__ import annotations

import click

Bbox = tuple[float, float, float, float]

strength_option = click.option(
    "--strength",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Share of the steps run from the map head's noised sketch of each block's imagery; 1 "
    "starts from pure noise. Below 1 needs a model with a map head.",
)


def parse_bbox(text: str) -> Bbox:
    """ "W,S,E,N" in degrees, not empty."""
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not four numbers W,S,E,N") from None
    if len(numbers) != 4:
        raise click.BadParameter(f"{text!r} has {len(numbers)} numbers; give four: W,S,E,N")
    w, s, e, n = numbers
    if not (w < e and s < n):
        raise click.BadParameter(f"bbox {text!r} is empty (need W<E and S<N)")
    return w, s, e, n


def parse_zooms(text: str) -> tuple[int, int]:
    """ "14-17" -> (14, 17); "16" -> (16, 16)."""
    low, sep, high = text.partition("-")
    try:
        zooms = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a zoom (15) or a zoom range (14-17)") from None
    if zooms[0] > zooms[1]:
        raise click.BadParameter(f"{text!r}: the first zoom must not exceed the second")
    return zooms


def zoom_range(text: str) -> range:
    low, high = parse_zooms(text)
    return range(low, high + 1)
