"""ScaleInfo: ground resolution, scale denominator and the SCGM prompt, with known answers."""

from __future__ import annotations

import math

import pytest

from model import ScaleInfo
from model.scale import area_examples


def test_z18_equator_prompt_is_the_official_format_with_true_numbers() -> None:
    scale = ScaleInfo(zoom=18, lat=0.0, ref_zoom=16, span=4)
    resolution = 2 * math.pi * 6378137 / 256 / 2**18  # Web Mercator m/px at the equator
    assert scale.ground_resolution == pytest.approx(resolution, rel=1e-9)
    assert scale.ground_resolution == pytest.approx(0.5972, abs=1e-4)
    assert scale.scale_denominator == pytest.approx(resolution / 0.00028)
    assert round(scale.scale_denominator) == 2133
    assert scale.prompt() == (
        "geographical map tile, tile zoom level 18, reference zoom level 16, "
        "reference zoom scale 4X, map resolution 0.597m/pixel, map scale 1:2133, "
        "examples of areas to represent: some buildings, trees"
    )


def test_latitude_shrinks_resolution_by_cos_lat() -> None:
    at_60 = ScaleInfo.with_span(16, lat=60.0, span=2)
    assert at_60.ground_resolution == pytest.approx(ScaleInfo(16).ground_resolution / 2)
    assert "map resolution 1.194m/pixel" in at_60.prompt()
    assert "reference zoom level 15, reference zoom scale 2X" in at_60.prompt()
    assert "map scale 1:4265" in at_60.prompt()  # 156543.03392 * 0.5 / 2**16 / 0.00028


def test_root_zoom_prompt_has_no_reference_clauses() -> None:
    prompt = ScaleInfo(zoom=14, lat=0.0).prompt()
    assert prompt == (
        "geographical map tile, tile zoom level 14, map resolution 9.555m/pixel, "
        "map scale 1:34124, examples of areas to represent: village, or suburb"
    )


@pytest.mark.parametrize(
    ("zoom", "example"),
    [
        (14, "village, or suburb"),
        (15, "small road"),
        (16, "street"),
        (17, "block, park, addresses"),
        (18, "some buildings, trees"),
        (12, "town, or city district"),
        (19, "local highway and crossing details"),
        (24, "mid-sized building"),
        (0, "whole world"),
    ],
)
def test_examples_per_zoom(zoom: int, example: str) -> None:
    assert area_examples(zoom) == example
    assert ScaleInfo(zoom).prompt().endswith(f"examples of areas to represent: {example}")


@pytest.mark.parametrize("zoom", range(12, 20))
def test_service_zooms_work_with_both_spans(zoom: int) -> None:
    for span in (0, 2, 4):
        assert ScaleInfo.with_span(zoom, lat=-33.9, span=span).prompt()


@pytest.mark.parametrize("zoom", [-1, 25, 30])
def test_zoom_without_scale_information_raises(zoom: int) -> None:
    with pytest.raises(ValueError, match="no scale information"):
        ScaleInfo(zoom)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zoom": 18, "ref_zoom": 17, "span": 4},  # 4X is two levels up
        {"zoom": 18, "ref_zoom": None, "span": 2},
        {"zoom": 18, "ref_zoom": 16, "span": 0},
        {"zoom": 18, "ref_zoom": 15, "span": 8},
        {"zoom": 1, "ref_zoom": -1, "span": 4},
        {"zoom": 10, "lat": 89.0},
    ],
)
def test_inconsistent_scale_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ScaleInfo(**kwargs)


def test_numeric_embedding_is_order_one_and_distinguishes_scales() -> None:
    base = ScaleInfo.with_span(18, 0.0, 4).embedding()
    assert all(abs(v) <= 1.2 for v in base)
    assert base != ScaleInfo.with_span(18, 60.0, 4).embedding()
    assert base != ScaleInfo.with_span(18, 0.0, 2).embedding()
    assert base[0] == pytest.approx(18 / 24)
