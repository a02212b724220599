"""`mapcascade eval`: cascade-generate a held-out world area and score it against the truth."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.params import parse_bbox, strength_option, zoom_range
from app.settings import demo_layer

DEMO = demo_layer()  # eval scores the cascade as the demo layer serves it


@click.command(name="eval")
@click.option(
    "--model",
    default="demo",
    show_default=True,
    help="tiny, demo, sd21 or a checkpoint folder.",
)
@click.option(
    "--area",
    default="helsinki-heldout",
    show_default=True,
    help="World area, or a real site (zanzibar, banepa-south: held out).",
)
@click.option("--zooms", help="Zoom range A-B to score (default: the area's root zoom to max).")
@click.option("--bbox", help="W,S,E,N: evaluate only this part of the area.")
@click.option(
    "--steps", type=click.IntRange(min=1), help="Sampling steps (default: the model's own)."
)
@strength_option
@click.option(
    "--reference-span",
    type=click.Choice(["2", "4"]),
    default=str(DEMO.reference_span),
    show_default=True,
    help="Cascade reference: 2 the parent, 4 the grandparent quadrant (default: the demo layer's).",
)
@click.option(
    "--margin",
    type=click.IntRange(0, 256),
    default=DEMO.context_margin,
    show_default=True,
    help="Context px drawn around each block, a multiple of 32 (default: the demo layer's).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def evaluate(model: str, area: str, zooms: str | None, bbox: str | None, steps: int | None,
             strength: float, reference_span: str, margin: int, out: Path) -> None:  # fmt: skip
    """Write OUT/report.json and OUT/mosaic_z*.png (imagery | generated | truth)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from worker.evaluate import EvalSpec, load_model
    from worker.evaluate import evaluate as run
    from worker.world.areas import area_or_site

    if margin % 32:
        raise click.BadParameter(f"{margin} is not a multiple of 32", param_hint="--margin")
    try:
        where = area_or_site(area)
    except KeyError as e:
        raise click.BadParameter(str(e.args[0]), param_hint="--area") from None
    split = where.split
    zooms = zooms or f"{where.root_zoom}-{where.max_zoom}"
    if split == "train":
        click.echo(f"warning: {area} is training data; scores will flatter the model", err=True)
    spec = EvalSpec(out=out, model=model, area=area, zooms=zoom_range(zooms),
                    bbox=parse_bbox(bbox) if bbox else None, steps=steps, strength=strength,
                    reference_span=int(reference_span), context_margin=margin)  # fmt: skip
    try:
        generator = load_model(spec)
    except (ValueError, FileNotFoundError) as e:  # unknown model, zooms above the root
        raise click.UsageError(str(e)) from None
    with Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as bar:  # fmt: skip
        task = bar.add_task("blocks", total=None)
        report = run(
            spec, generator, lambda done, total: bar.update(task, completed=done, total=total)
        )
    o = report["overall"]["model"]
    if "psnr_y" in o:
        scores = f"Y-PSNR {o['psnr_y']:.2f} dB, Y-SSIM {o['ssim_y']:.3f}, "
    else:
        scores = "".join(f"{k} IoU {v:.3f}, " for k, v in o["iou"].items() if k != "mean")
    click.echo(
        f"{report['model']} on {area} z{zooms}: {scores}mean IoU {o['iou']['mean']:.3f} "
        f"-> {out}/report.json"
    )
