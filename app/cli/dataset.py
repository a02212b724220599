"""`mapcascade dataset build`: write a CSCMG-layout training set (plus 512 px blocks)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.cli.params import Bbox, parse_bbox, zoom_range

if TYPE_CHECKING:  # the CLI imports the worker side lazily, when a command runs
    from app.imagery_config import ImageryConfig
    from worker.dataset import DatasetSpec


@click.group()
def dataset() -> None:
    """Build training and evaluation sets."""


def parse_imagery(text: str) -> dict:
    """ "dir:PATH", "geotiff:PATH", "xyz:URL", "world:AREA" -> a layer `imagery:` mapping."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise click.BadParameter(f"expected TYPE:PATH_OR_URL, got {text!r}")
    field = {"dir": "path", "geotiff": "path", "xyz": "url", "world": "area"}.get(kind)
    if field is None:
        raise click.BadParameter(f"unknown imagery type {kind!r}: use dir, geotiff, xyz or world")
    return {"type": kind, field: value}


def _xyz_config(url: str, option: str) -> ImageryConfig:
    """A tile service template as the `xyz` imagery source reads it (retries, {-y}, {s})."""
    from pydantic import ValidationError

    from app.imagery_config import parse_imagery_config

    try:
        return parse_imagery_config({"type": "xyz", "url": url})
    except ValidationError as e:
        msg = "; ".join(err["msg"] for err in e.errors())
        raise click.BadParameter(msg, param_hint=option) from None


def _imagery_config(inline: str | None, layer_ref: str | None) -> ImageryConfig:
    """The imagery configuration of --imagery TYPE:PATH or --imagery-layer FILE:NAME."""
    from pydantic import ValidationError

    from app.imagery_config import parse_imagery_config
    from app.settings import load_layers_file

    if inline is not None:
        try:
            return parse_imagery_config(parse_imagery(inline))
        except ValidationError as e:
            msg = "; ".join(err["msg"] for err in e.errors())
            raise click.BadParameter(msg, param_hint="--imagery") from None
    assert layer_ref is not None
    path, _, name = layer_ref.rpartition(":")
    if not path or not name:
        raise click.BadParameter(
            f"expected FILE:LAYER, got {layer_ref!r}", param_hint="--imagery-layer"
        )
    try:
        layers = load_layers_file(Path(path))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--imagery-layer") from None
    found = [layer for layer in layers.layers if layer.name == name]
    if not found:
        known = ", ".join(layer.name for layer in layers.layers)
        raise click.BadParameter(
            f"{path} has no layer {name!r} ({known})", param_hint="--imagery-layer"
        )
    imagery = found[0].imagery
    if imagery is None:
        raise click.BadParameter(
            f"layer {name!r} of {path} is served from an archive: it has no imagery",
            param_hint="--imagery-layer",
        )
    return imagery


@dataset.command()
@click.option("--area", help="Named world area (helsinki-train, ...) or seed:N.")
@click.option("--seed", type=int, help="Procedural town N (same as --area seed:N).")
@click.option("--site", help="Real site: imagery + OSM footprints (banepa, kampala, ...).")
@click.option(
    "--imagery",
    "imagery_inline",
    metavar="TYPE:PATH",
    help="Imagery as a layer takes it: dir:PATH, geotiff:PATH, xyz:URL, world:AREA.",
)
@click.option(
    "--imagery-layer", metavar="FILE:NAME", help="The imagery of a layer in a layers file."
)
@click.option(
    "--osm",
    type=click.Path(path_type=Path),
    help="Labels: .osm.pbf or GeoJSON (WGS 84), rendered in our map style.",
)
@click.option(
    "--classes",
    default="all",
    show_default=True,
    help="Classes the labels cover, e.g. building; other classes are unknown.",
)
@click.option(
    "--label-extent",
    metavar="W,S,E,N",
    help="Where the labels are complete (default: the box of the labels).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "heldout"]),
    default="train",
    show_default=True,
    help="train: train/val lists; heldout: a test list.",
)
@click.option("--bbox", help="W,S,E,N in degrees: cuts the area, or the region to build.")
@click.option("--zooms", default="14-18", show_default=True, help="Zoom range A-B of the tiles.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--imagery-url", help="XYZ template for imagery instead of the world.")
@click.option("--map-url", help="XYZ template for target maps (a service you may copy).")
@click.option("--min-coverage", default=0.5, show_default=True,
              help="Share of a tile with imagery and known map.")  # fmt: skip
def build(
    area: str | None,
    seed: int | None,
    site: str | None,
    imagery_inline: str | None,
    imagery_layer: str | None,
    osm: Path | None,
    classes: str,
    label_extent: str | None,
    split: str,
    bbox: str | None,
    zooms: str,
    out: Path,
    imagery_url: str | None,
    map_url: str | None,
    min_coverage: float,
) -> None:
    """Write rs_256/, map_256/, ref_scale_{2,4}_256/, mask_256/, the 512 px blocks, CSVs and
    dataset.json.

    Sources: a world area (--area/--seed); a real site (--site); any imagery (--imagery,
    --imagery-layer or --imagery-url) with labels (--osm) or a map service (--map-url).
    Resumable: files already written are kept, so a rerun finishes an interrupted build.
    """
    from worker import dataset as ds

    if seed is not None:
        area = f"seed:{seed}"
    box = parse_bbox(bbox) if bbox else None
    if area is not None:
        spec = _world_spec(area, box, out, zooms, min_coverage)
    else:
        if site is not None:
            spec = _site_spec(site, box, out, zooms, min_coverage)
        else:
            spec = _imagery_spec(
                imagery_inline, imagery_layer, imagery_url, osm, map_url, classes,
                label_extent, split, box, out, zooms, min_coverage,
            )  # fmt: skip
        _check_imagery(spec)
    if spec.split == "heldout":
        click.echo(
            f"note: {spec.area} is held out: writing a test list, never train on it", err=True
        )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar("dataset") as advance:
        manifest = ds.build(spec, advance)
    if not manifest["counts"]:
        if created:
            shutil.rmtree(out)
        raise click.ClickException(
            f"no tile has both imagery and known map (>= {min_coverage:.0%}) in the bbox at "
            f"zooms {zooms}: check the imagery, the labels and their extent"
        )
    counts = ", ".join(f"{k}: {v}" for k, v in manifest["counts"].items())
    click.echo(f"wrote {out} ({counts})")


def _world_spec(
    area: str, box: Bbox | None, out: Path, zooms: str, min_coverage: float
) -> DatasetSpec:
    from worker import dataset as ds
    from worker.world import get_area, world_for

    try:
        spec_area = get_area(area)
    except KeyError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="--area") from None
    world = world_for(spec_area, box)
    return ds.DatasetSpec(
        out=out, bbox=world.bbox, zooms=zoom_range(zooms), imagery=ds.WorldImagery(world),
        maps=ds.WorldMap(world), area=area, split=spec_area.split, min_coverage=min_coverage,
    )  # fmt: skip


def _site_spec(
    site: str, box: Bbox | None, out: Path, zooms: str, min_coverage: float
) -> DatasetSpec:
    from worker import dataset as ds
    from worker.world.areas import intersect

    try:
        s, source, labels = ds.open_site(site)
    except KeyError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="--site") from None
    return ds.DatasetSpec(
        out=out, bbox=intersect(labels.extent, box), zooms=zoom_range(zooms),
        imagery=ds.SourceTiles(source), maps=labels, area=f"real:{s.name}", split=s.split,
        min_coverage=min_coverage,
    )  # fmt: skip


def _imagery_spec(
    imagery_inline: str | None,
    imagery_layer: str | None,
    imagery_url: str | None,
    osm: Path | None,
    map_url: str | None,
    classes: str,
    label_extent: str | None,
    split: str,
    box: Bbox | None,
    out: Path,
    zooms: str,
    min_coverage: float,
) -> DatasetSpec:
    from worker import dataset as ds
    from worker.imagery import open_source
    from worker.world.areas import intersect
    from worker.world.labels import LabelError, LabelMap, parse_classes

    given = [v for v in (imagery_inline, imagery_layer, imagery_url) if v]
    if len(given) != 1 or (osm is None) == (map_url is None):
        raise click.UsageError(
            "give --area, --seed or --site; or one imagery option (--imagery, --imagery-layer, "
            "--imagery-url) with one map truth (--osm or --map-url)"
        )
    if imagery_url:
        imagery = ds.SourceTiles(open_source(_xyz_config(imagery_url, "--imagery-url")))
    else:
        imagery = ds.SourceTiles(open_source(_imagery_config(imagery_inline, imagery_layer)))
    maps: ds.TileProvider
    if map_url:
        if box is None:
            raise click.UsageError("--map-url needs --bbox")
        maps = ds.SourceTiles(open_source(_xyz_config(map_url, "--map-url")), maps=True)
    else:
        assert osm is not None  # exactly one of --osm and --map-url, checked above
        try:
            extent = parse_bbox(label_extent) if label_extent else None
            labels = LabelMap.from_file(osm, parse_classes(classes), extent)
        except LabelError as e:
            raise click.BadParameter(str(e), param_hint="--osm") from None
        if box is not None and not labels.overlaps(box):
            raise click.BadParameter(
                f"the labels cover {_fmt(labels.extent)}, which does not overlap the bbox "
                f"{_fmt(box)}", param_hint="--osm",
            )  # fmt: skip
        box, maps = intersect(labels.extent, box), labels
    return ds.DatasetSpec(out=out, bbox=box, zooms=zoom_range(zooms), imagery=imagery,
                          maps=maps, split=split, min_coverage=min_coverage)  # fmt: skip


def _fmt(box: Bbox) -> str:
    return ",".join(f"{v:.5f}" for v in box)


def _check_imagery(spec: DatasetSpec) -> None:
    """Every zoom must have imagery somewhere in the bbox (up to 64 tiles spread over it are
    tried), so a wrong path or a zoom the source cannot serve fails before anything is written."""
    import mercantile

    from worker.imagery import ImageryError

    for z in spec.zooms:
        tiles = list(mercantile.tiles(*spec.bbox, zooms=[z]))
        probe = tiles[:: max(1, len(tiles) // 64)][:64]
        try:
            found = any(spec.imagery.tile(t.z, t.x, t.y) is not None for t in probe)
        except (ImageryError, OSError, ValueError) as e:
            raise click.ClickException(f"cannot read the imagery at zoom {z}: {e}") from None
        if not found:
            raise click.ClickException(
                f"the imagery has no data at zoom {z} in {_fmt(spec.bbox)}: wrong area, or a "
                "zoom the source cannot serve"
            )


@contextmanager
def progress_bar(name: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar with an ETA; yields `advance(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = [*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(name, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
