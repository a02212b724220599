"""The `imagery:` section is checked at load time; messages name the field and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imagery_fixtures import GEOTIFF, KAMPALA
from pydantic import BaseModel, ValidationError

from app.imagery_config import (
    DirImageryConfig,
    GeoTIFFImageryConfig,
    ImageryConfig,
    WorldImageryConfig,
    XYZImageryConfig,
    parse_imagery_config,
)

URL = "https://tiles.example.org/{z}/{x}/{y}.png"


def rejected(data: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as error:
        parse_imagery_config(data, **kwargs)
    return str(error.value)


def test_each_type_parses() -> None:
    assert isinstance(parse_imagery_config({"type": "xyz", "url": URL}), XYZImageryConfig)
    assert isinstance(parse_imagery_config({"type": "dir", "path": KAMPALA}), DirImageryConfig)
    tif = parse_imagery_config({"type": "geotiff", "path": str(GEOTIFF)})
    assert isinstance(tif, GeoTIFFImageryConfig) and not tif.is_remote
    assert isinstance(parse_imagery_config({"type": "world", "seed": 7}), WorldImageryConfig)


def test_usable_as_a_field_of_the_settings() -> None:
    class Layer(BaseModel):
        imagery: ImageryConfig

    layer = Layer.model_validate({"imagery": {"type": "world", "area": "helsinki"}})
    assert isinstance(layer.imagery, WorldImageryConfig) and layer.imagery.area == "helsinki"


def test_xyz_defaults_and_timeout_shorthand() -> None:
    config = parse_imagery_config({"type": "xyz", "url": URL, "timeout": 7})
    assert isinstance(config, XYZImageryConfig)
    assert (config.timeout.connect, config.timeout.read, config.timeout.total) == (7, 7, 14)
    assert (config.retries, config.concurrency, config.max_zoom) == (3, 4, None)
    split = parse_imagery_config({"type": "xyz", "url": URL, "timeout": {"connect": 2, "read": 9}})
    assert isinstance(split, XYZImageryConfig) and split.timeout.total == 11


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://t.example/{z}/{x}.png", "missing {y}"),
        ("https://t.example/{x}/{y}.png", "missing {z}"),
        ("https://t.example/{z}/{x}/{y}/{r}.png", "unknown placeholder(s) {r}"),
        ("https://t.example/{z}/{x}/{y}/{-y}.png", "both {y} and {-y}"),
        ("https://t.example/{z}/{x}/{y.png", "unbalanced brace"),
        ("ftp://t.example/{z}/{x}/{y}.png", "must start with http:// or https:// (got ftp://)"),
        ("tiles/{z}/{x}/{y}.png", "must start with http:// or https://"),
        ("https:///{z}/{x}/{y}.png", "no host name"),
        ("https://{s}.t.example/{z}/{x}/{y}.png", "uses {s} but no subdomains"),
    ],
)
def test_malformed_templates(url: str, message: str) -> None:
    text = rejected({"type": "xyz", "url": url})
    assert message in text
    field = "xyz.subdomains" if "subdomains" in message else "xyz.url"
    assert field in text, "the message names where the problem is"


def test_tms_template_and_subdomains_accepted() -> None:
    config = parse_imagery_config(
        {"type": "xyz", "url": "http://{s}.t.example/{z}/{x}/{-y}.jpg", "subdomains": ["a", "b"]}
    )
    assert isinstance(config, XYZImageryConfig) and config.subdomains == ["a", "b"]


def test_xyz_field_limits() -> None:
    assert "retries" in rejected({"type": "xyz", "url": URL, "retries": -1})
    assert "concurrency" in rejected({"type": "xyz", "url": URL, "concurrency": 0})
    assert "subdomains are given but the url has no {s}" in rejected(
        {"type": "xyz", "url": URL, "subdomains": ["a"]}
    )
    assert "max_zom" in rejected({"type": "xyz", "url": URL, "max_zom": 19}), "typos fail"


def test_unknown_type_is_named() -> None:
    text = rejected({"type": "wms", "url": URL})
    assert "'xyz', 'dir', 'geotiff', 'world'" in text and "wms" in text


def test_missing_folder(tmp_path: Path) -> None:
    text = rejected({"type": "dir", "path": str(tmp_path / "nope")})
    assert "dir.path" in text and "tile folder does not exist" in text
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in rejected({"type": "dir", "path": str(tmp_path / "file")})
    assert "no zoom level folders" in rejected({"type": "dir", "path": str(tmp_path)})
    assert parse_imagery_config({"type": "dir", "path": str(tmp_path), "max_zoom": 18})


def test_folder_options() -> None:
    config = parse_imagery_config(
        {"type": "dir", "path": KAMPALA, "scheme": "tms", "extensions": [".PNG", "webp"]}
    )
    assert isinstance(config, DirImageryConfig) and config.extensions == ("png", "webp")
    assert "extensions must be among" in rejected(
        {"type": "dir", "path": KAMPALA, "extensions": ["gif"]}
    )
    assert "scheme" in rejected({"type": "dir", "path": KAMPALA, "scheme": "wmts"})


def test_relative_paths_follow_the_configuration_file() -> None:
    config = parse_imagery_config({"type": "dir", "path": "kampala-oam"}, base_dir=KAMPALA.parent)
    assert isinstance(config, DirImageryConfig) and config.path == KAMPALA


def test_unreadable_or_non_geotiff_files(tmp_path: Path) -> None:
    missing = rejected({"type": "geotiff", "path": str(tmp_path / "nope.tif")})
    assert "geotiff.path" in missing and "GeoTIFF file does not exist" in missing
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff")
    assert "cannot read" in rejected({"type": "geotiff", "path": str(garbage)})
    png = next(KAMPALA.glob("21/*/*.png"))
    assert "is not a GeoTIFF (GDAL reads it as PNG)" in rejected(
        {"type": "geotiff", "path": str(png)}
    )
    assert "bands [5] do not exist" in rejected(
        {"type": "geotiff", "path": str(GEOTIFF), "bands": [1, 2, 5]}
    )
    assert "min < max" in rejected({"type": "geotiff", "path": str(GEOTIFF), "rescale": [9, 1]})


def test_ungeoreferenced_tiff(tmp_path: Path) -> None:
    import numpy as np
    import rasterio

    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=4, height=4, count=3, dtype="uint8") as ds:
        ds.write(np.zeros((3, 4, 4), np.uint8))
    assert "no coordinate reference system" in rejected({"type": "geotiff", "path": str(plain)})


def test_remote_cog_is_not_opened_at_load_time() -> None:
    config = parse_imagery_config({"type": "geotiff", "path": "https://data.example/ortho.tif"})
    assert isinstance(config, GeoTIFFImageryConfig) and config.is_remote


@pytest.mark.parametrize("fields", [{}, {"area": "helsinki", "seed": 3}])
def test_world_needs_exactly_one_of_area_or_seed(fields: dict[str, Any]) -> None:
    assert "exactly one of `area` or `seed`" in rejected({"type": "world", **fields})
