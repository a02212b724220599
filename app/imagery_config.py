"""The `imagery:` section of a layer: where the worker reads the imagery under a block.

Checked when the configuration loads, so a typo fails at start-up with a message naming the field,
not hours later inside a GPU job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Placeholders an XYZ template may use; {-y} is the TMS row (counted from the south).
URL_PLACEHOLDERS = ("z", "x", "y", "-y", "s")
TILE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "/vsi")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the configuration file's folder when the loader says which."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not path.is_absolute():
        return Path(base) / path
    return path


class _Strict(BaseModel):
    # A misspelt key (`max_zom`) must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeoutConfig(_Strict):
    """Seconds; one attempt is abandoned after connect + read in all, even if bytes trickle in."""

    connect: float = Field(default=5.0, gt=0, le=300)
    read: float = Field(default=20.0, gt=0, le=600)

    @property
    def total(self) -> float:
        return self.connect + self.read


class XYZImageryConfig(_Strict):
    """A tile service: `https://{s}.example.com/{z}/{x}/{y}.png` (or `{-y}` for TMS rows)."""

    type: Literal["xyz"]
    url: str
    subdomains: list[str] = Field(default_factory=list, validate_default=True)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: TimeoutConfig = Field(default_factory=lambda: TimeoutConfig())
    retries: int = Field(default=3, ge=0, le=10, description="extra attempts after the first one")
    backoff: float = Field(
        default=0.5, ge=0, le=60, description="first retry delay, doubled each time"
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="requests in flight per read")
    max_zoom: int | None = Field(
        default=None, ge=0, le=30, description="deepest zoom the service has"
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _number_means_both(cls, value: Any) -> Any:
        # `timeout: 10` is the common way to write it; it bounds connect and read alike.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"connect": value, "read": value}
        return value

    @field_validator("url")
    @classmethod
    def _check_template(cls, url: str) -> str:
        if "{" in _PLACEHOLDER.sub("", url) or "}" in _PLACEHOLDER.sub("", url):
            raise ValueError(f"url template has an unbalanced brace: {url!r}")
        names = _PLACEHOLDER.findall(url)
        unknown = sorted({n for n in names if n not in URL_PLACEHOLDERS})
        if unknown:
            allowed = ", ".join("{" + n + "}" for n in URL_PLACEHOLDERS)
            found = ", ".join("{" + n + "}" for n in unknown)
            raise ValueError(f"url template has unknown placeholder(s) {found}; allowed: {allowed}")
        missing = [n for n in ("z", "x") if n not in names]
        if "y" not in names and "-y" not in names:
            missing.append("y")
        if missing:
            need = ", ".join("{" + n + "}" for n in missing)
            raise ValueError(
                f"url template must contain {{z}}, {{x}} and {{y}} (or {{-y}}); "
                f"missing {need}: {url!r}"
            )
        if "y" in names and "-y" in names:
            raise ValueError("url template uses both {y} and {-y}; pick one row order")
        parts = urlsplit(_PLACEHOLDER.sub("0", url))
        if parts.scheme not in ("http", "https"):
            raise ValueError(
                f"url must start with http:// or https:// (got {parts.scheme}://)"
                if parts.scheme
                else "url must start with http:// or https://"
            )
        if not parts.hostname:
            raise ValueError(f"url has no host name: {url!r}")
        return url

    @field_validator("subdomains")
    @classmethod
    def _check_subdomains(cls, subdomains: list[str], info: ValidationInfo) -> list[str]:
        url = info.data.get("url")
        if url is None:  # the url itself was rejected; that error says enough
            return subdomains
        uses_s = "{s}" in url
        if uses_s and not subdomains:
            raise ValueError("url uses {s} but no subdomains are given (e.g. [a, b, c])")
        if subdomains and not uses_s:
            raise ValueError("subdomains are given but the url has no {s} placeholder")
        if any(not s or "/" in s for s in subdomains):
            raise ValueError("subdomains must be non-empty host name parts without '/'")
        return subdomains


class DirImageryConfig(_Strict):
    """A local tile folder `{path}/{z}/{x}/{y}.{png,jpg,jpeg,webp}`, XYZ or TMS row order."""

    type: Literal["dir"]
    path: Path
    scheme: Literal["xyz", "tms"] = "xyz"
    max_zoom: int | None = Field(
        default=None, ge=0, le=30, description="default: deepest zoom folder"
    )
    extensions: tuple[str, ...] = TILE_EXTENSIONS

    @field_validator("path")
    @classmethod
    def _check_folder(cls, path: Path, info: ValidationInfo) -> Path:
        path = _resolve(path.expanduser(), info)
        if not path.exists():
            raise ValueError(f"tile folder does not exist: {path}")
        if not path.is_dir():
            raise ValueError(f"tile folder is not a directory: {path}")
        return path

    @field_validator("extensions")
    @classmethod
    def _check_extensions(cls, extensions: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(e.lower().lstrip(".") for e in extensions)
        bad = [e for e in cleaned if e not in TILE_EXTENSIONS]
        if bad or not cleaned:
            raise ValueError(f"extensions must be among {', '.join(TILE_EXTENSIONS)} (got {bad})")
        return cleaned

    @model_validator(mode="after")
    def _check_has_levels(self) -> DirImageryConfig:
        if self.max_zoom is None and not zoom_levels(self.path):
            raise ValueError(
                f"tile folder {self.path} has no zoom level folders ({{z}}/{{x}}/"
                "{y}.png); set max_zoom if it is filled later"
            )
        return self


def zoom_levels(path: Path) -> list[int]:
    """The zooms a tile folder holds: its sub-folders named by a number, ascending."""
    try:
        return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError:
        return []


class GeoTIFFImageryConfig(_Strict):
    """An orthomosaic GeoTIFF or Cloud-Optimized GeoTIFF in any CRS (local path or URL)."""

    type: Literal["geotiff"]
    path: str
    bands: tuple[int, int, int] | tuple[int] | None = Field(
        default=None,
        description="1-based band indexes used as RGB (or one grey band); default 1,2,3",
    )
    nodata: float | None = Field(default=None, description="overrides the file's nodata value")
    rescale: tuple[float, float] | None = Field(
        default=None, description="value range mapped to 0..255; required for non-8-bit data"
    )
    resampling: Literal["nearest", "bilinear", "cubic", "lanczos"] = "bilinear"

    @property
    def is_remote(self) -> bool:
        return self.path.startswith(REMOTE_PREFIXES)

    @field_validator("path")
    @classmethod
    def _check_file(cls, path: str, info: ValidationInfo) -> str:
        if path.startswith(REMOTE_PREFIXES):
            # Not opened here: loading a configuration must not depend on the network.
            return path
        local = _resolve(Path(path).expanduser(), info)
        if not local.is_file():
            raise ValueError(f"GeoTIFF file does not exist: {local}")
        return str(local)

    @model_validator(mode="after")
    def _check_readable(self) -> GeoTIFFImageryConfig:
        if self.rescale is not None and self.rescale[0] >= self.rescale[1]:
            raise ValueError(f"rescale must be [min, max] with min < max (got {self.rescale})")
        if not self.is_remote:
            _check_geotiff(self)
        return self


def _check_geotiff(config: GeoTIFFImageryConfig) -> None:
    # rasterio (GDAL) is a plain library dependency, fine for the API process, unlike torch.
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        # An ungeoreferenced file gets a clear error below rather than GDAL's warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(config.path)
        with ds:
            driver, crs, count, dtypes = ds.driver, ds.crs, ds.count, ds.dtypes
            georeferenced = not ds.transform.is_identity or bool(ds.gcps[0])
    except RasterioError as exc:
        raise ValueError(f"cannot read {config.path} as a raster: {exc}") from exc
    if driver not in ("GTiff", "COG"):
        raise ValueError(f"{config.path} is not a GeoTIFF (GDAL reads it as {driver})")
    if crs is None or not georeferenced:
        raise ValueError(f"{config.path} has no coordinate reference system or geotransform")
    bands = config.bands or ((1, 2, 3) if count >= 3 else (1,))
    outside = [b for b in bands if not 1 <= b <= count]
    if outside:
        raise ValueError(f"bands {outside} do not exist in {config.path} (it has {count} bands)")
    if config.rescale is None and any(dtypes[b - 1] != "uint8" for b in bands):
        raise ValueError(
            f"{config.path} holds {dtypes[bands[0] - 1]} data: "
            "set rescale: [min, max] to map it to 8-bit colours"
        )


class WorldImageryConfig(_Strict):
    """The synthetic world: a named area, or a random one from a seed (exactly one of them)."""

    type: Literal["world"]
    area: str | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WorldImageryConfig:
        if (self.area is None) == (self.seed is None):
            raise ValueError("world imagery needs exactly one of `area` or `seed`")
        return self


ImageryConfig: TypeAlias = Annotated[
    XYZImageryConfig | DirImageryConfig | GeoTIFFImageryConfig | WorldImageryConfig,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[ImageryConfig] = TypeAdapter(
    ImageryConfig, config=ConfigDict(title="imagery")
)


def parse_imagery_config(data: Any, base_dir: Path | None = None) -> ImageryConfig:
    """Validate one `imagery:` mapping; relative paths are read from `base_dir` when given."""
    context = {"base_dir": base_dir} if base_dir is not None else None
    return _ADAPTER.validate_python(data, context=context)
