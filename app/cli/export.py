"""`mapcascade export`: the stored tiles of an area as an MBTiles or PMTiles file, read from the
tile store (MAPCASCADE_STORE, or the data dir's tiles); `--seed` first generates what is missing
through the running service, as `mapcascade seed` does.

Exit codes: 0 written, 1 nothing to export, the seed or the write failed (nothing written),
2 bad arguments (nothing written), 130 interrupted (nothing written).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.cli.seed import area_options, client, submit_seed, watch_seed
from app.errors import InvalidRequest
from app.export import (
    FORMATS,
    ExportFailed,
    ExportResult,
    Format,
    check_output,
    export_area,
    plan_export,
    take_inventory,
)
from app.settings import Settings
from app.store import StoreConfigError, open_store


def format_of(fmt: str | None, out: Path) -> Format:
    if fmt is not None:
        return fmt  # type: ignore[return-value]
    suffix = out.suffix.lstrip(".").lower()
    if suffix in FORMATS:
        return suffix  # type: ignore[return-value]
    raise click.BadParameter(
        f"give --format mbtiles|pmtiles (the name {out.name!r} does not say which)",
        param_hint="--format",
    )


@click.command("export")
@area_options
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Archive format [default: from OUT's suffix].",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--seed",
    "seed_first",
    is_flag=True,
    help="First generate what is missing, through the service at --url.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between seed progress polls.",
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data dir whose tiles folder is the store, unless MAPCASCADE_STORE names one "
              "[default: $MAPCASCADE_DATA_DIR or ./data].")  # fmt: skip
def export(
    bbox: list[float], zooms: tuple[int, int], layer: str | None, url: str, token: str | None,
    out: Path, fmt: str | None, force: bool, seed_first: bool, interval: float,
    data_dir: Path | None,
) -> None:  # fmt: skip
    """Write the stored tiles of a bbox and zoom range to an MBTiles 1.3 or PMTiles v3 file."""
    archive_format = format_of(fmt, out)
    try:
        settings = Settings(data_dir=data_dir) if data_dir else Settings()
        layers = settings.layers
    except ValueError as e:
        raise click.ClickException(f"cannot load the layers: {e}") from None
    try:
        store = open_store(settings)
    except StoreConfigError as e:
        raise click.ClickException(str(e)) from None
    if layer is not None and layer not in layers:
        raise click.BadParameter(f"unknown layer {layer!r}; the layers are: {', '.join(layers)}",
                                 param_hint="--layer")  # fmt: skip
    target = layers[layer] if layer else settings.default_layer
    try:
        plan = plan_export(target, tuple(bbox), *zooms, settings.max_export_tiles)  # type: ignore[arg-type]
        check_output(out, force)
    except (InvalidRequest, ExportFailed) as e:
        raise click.UsageError(str(e)) from None

    if seed_first:
        with client(url, token) as http:
            status = watch_seed(http, submit_seed(http, bbox, zooms, target.name), url, interval)
        if status["status"] != "done":
            raise click.ClickException(f"the seed ended {status['status']}: nothing exported")

    try:
        inventory = take_inventory(store, plan)
    except InvalidRequest as e:
        raise click.ClickException(f"{e}; nothing written") from None
    if inventory.missing:
        examples = ", ".join(f"{t.z}/{t.x}/{t.y}" for t in inventory.examples)
        click.echo(
            f"{inventory.missing} of {plan.tiles} tiles are not generated yet (e.g. {examples}); "
            "exporting the stored ones (--seed generates the rest first)",
            err=True,
        )
    columns = (TextColumn("[bold]export"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tiles  ETA"), TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("export", total=len(inventory.found))
            result = export_area(
                store, plan, out, archive_format, force=force, inventory=inventory,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    except ExportFailed as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: nothing was written to {out}", err=True)
        raise SystemExit(130) from None
    click.echo(summary(result, target.name))


def summary(result: ExportResult, layer: str) -> str:
    missing = f", {result.missing} missing" if result.missing else ""
    return (
        f"exported {result.tiles} tiles of layer {layer} to {result.path} ({result.format}, "
        f"{result.bytes / 1e6:.2f} MB{missing}) in {result.seconds:.1f}s"
    )
