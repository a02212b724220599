"""`mapcascade nginx-config`: the nginx front (deploy/nginx/) rendered from the API's settings,
so nginx serves hits for the same layers, default layer, CORS origins and max-age as the API."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from app.settings import Layer, Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "mapcascade.conf.template"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# As app/main.py exposes them to pages on other origins.
EXPOSE_HEADERS = "ETag, Last-Modified, X-Cache, X-Tile-Status, Retry-After"
TILE_NUMBER = "0|[1-9][0-9]{0,9}"  # what app.routes.tiles.canonical_numbers lets through


def file_backed(layers: dict[str, Layer]) -> list[str]:
    """Layers whose tiles live in the store; archive layers are read by the API only."""
    return [name for name, layer in layers.items() if layer.source is None]


def tile_regex(layers: list[str], default: str | None) -> str:
    """The tile URLs nginx may answer from files: /tiles/{z}/{x}/{y}.png for the default layer,
    /tiles/{layer}/{z}/{x}/{y}.png for the others, with the numbers written canonically."""
    numbers = (
        f"(?<mapcascade_z>{TILE_NUMBER})/(?<mapcascade_x>{TILE_NUMBER})/"
        f"(?<mapcascade_y>{TILE_NUMBER})\\.png$"
    )
    if not layers:
        return "^/tiles/(?!)"  # nothing is stored in files: every tile goes to the API
    named = f"(?<mapcascade_layer>{'|'.join(sorted(layers))})/"
    return f"^/tiles/{named}{numbers}" if default is None else f"^/tiles/(?:{named})?{numbers}"


def cors_entries(origins: list[str]) -> str:
    if "*" in origins:
        return '    "~." "*";'
    return "\n".join(f'    "{_quoted(o)}" "{_quoted(o)}";' for o in origins)


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\;\n{}$'):
        raise ValueError(f"cannot put {value!r} in an nginx config")
    return value


def render(
    settings: Settings, api: str, listen: str, tiles_dir: Path | None = None,
    template: Path = TEMPLATE,
) -> str:  # fmt: skip
    layers = file_backed(settings.layers)
    default = settings.default_layer.name
    values = {
        "api": api,
        "listen": listen,
        "tiles_dir": str((tiles_dir or settings.tiles_dir).resolve()),
        "default_layer": default,
        "tile_regex": tile_regex(layers, default if default in layers else None),
        "cors_origins": cors_entries(settings.cors_origins),
        "expose_headers": EXPOSE_HEADERS,
        "cache_max_age": str(settings.cache_max_age),
        "read_timeout": str(math.ceil(settings.wait_max) + 30),
    }

    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ValueError(f"{template}: unknown placeholder {m.group(0)}")
        return values[m.group(1)]

    return PLACEHOLDER.sub(fill, template.read_text())


@click.command("nginx-config")
@click.option("--api", default="api:8000", show_default=True, help="host:port of the API.")
@click.option("--listen", default="80", show_default=True, help="nginx `listen` value.")
@click.option(
    "--tiles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The tile folder as nginx sees it (default: MAPCASCADE_DATA_DIR/tiles).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the config here (default: standard output).",
)
def nginx_config(api: str, listen: str, tiles_dir: Path | None, out: Path | None) -> None:
    """Print the nginx front's config for these settings (deploy/nginx/)."""
    try:
        text = render(Settings(), api, listen, tiles_dir)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if out is None:
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
