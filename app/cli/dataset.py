"""`mapcascade dataset build`: write a CSCMG-layout training set (plus 512 px blocks)."""

from __future__ import annotations

from pathlib import Path

import click


def parse_zooms(text: str) -> range:
    """ "14-18" -> range(14, 19); "16" -> range(16, 17)."""
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise click.BadParameter(f"expected A-B or A, got {text!r}") from None
    if a > b:
        raise click.BadParameter(f"zoom range {text!r} is empty")
    return range(a, b + 1)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected W,S,E,N in degrees, got {text!r}") from None
    if not (w < e and s < n):
        raise click.BadParameter(f"bbox {text!r} is empty (need W<E and S<N)")
    return w, s, e, n


@click.group()
def dataset() -> None:
    """Build training and evaluation sets."""


@dataset.command()
@click.option("--area", help="Named world area (helsinki-train, ...) or seed:N.")
@click.option("--seed", type=int, help="Procedural town N (same as --area seed:N).")
@click.option("--bbox", help="W,S,E,N in degrees: cuts the area, or the region for --*-url.")
@click.option("--zooms", default="14-18", show_default=True, help="Zoom range A-B of the tiles.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--imagery-url", help="XYZ template for imagery instead of the world.")
@click.option("--map-url", help="XYZ template for target maps instead of the world.")
@click.option("--min-coverage", default=0.5, show_default=True, help="Share of data per tile.")
def build(
    area: str | None,
    seed: int | None,
    bbox: str | None,
    zooms: str,
    out: Path,
    imagery_url: str | None,
    map_url: str | None,
    min_coverage: float,
) -> None:
    """Write rs_256/, map_256/, ref_scale_{2,4}_256/, the 512 px blocks, CSVs, dataset.json.

    Resumable: files already written are kept, so a rerun finishes an interrupted build.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from worker import dataset as ds
    from worker.world import get_area, world_for

    if seed is not None:
        area = f"seed:{seed}"
    box = parse_bbox(bbox) if bbox else None
    world = None
    split = "all"
    if area is not None:
        try:
            spec_area = get_area(area)
        except KeyError as e:
            raise click.BadParameter(str(e.args[0]), param_hint="--area") from None
        world = world_for(spec_area, box)
        box, split = world.bbox, spec_area.split
    elif box is None or not (imagery_url and map_url):
        raise click.UsageError("give --area or --seed, or --bbox with --imagery-url and --map-url")
    if split == "heldout":
        click.echo(f"note: {area} is held out: writing a test list, never train on it", err=True)
    assert box is not None
    imagery = ds.UrlTiles(imagery_url) if imagery_url else ds.WorldImagery(world)  # type: ignore[arg-type]
    maps = ds.UrlTiles(map_url) if map_url else ds.WorldMap(world)  # type: ignore[arg-type]
    spec = ds.DatasetSpec(
        out=out, bbox=box, zooms=parse_zooms(zooms), imagery=imagery, maps=maps,
        area=area or "custom", split=split, min_coverage=min_coverage,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    columns = [*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("dataset", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        manifest = ds.build(spec, advance)
    counts = ", ".join(f"{k}: {v}" for k, v in manifest["counts"].items())
    click.echo(f"wrote {out} ({counts})")
