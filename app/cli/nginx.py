"""`mapcascade nginx-config`: the nginx front (deploy/nginx/) rendered from the API's settings,
so nginx serves hits for the same layers, default layer, CORS origins and max-age as the API,
from the same store: the tile folder, or the S3 bucket (anonymous, path-style object URLs)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

import click

from app.settings import CORS_EXPOSED_HEADERS, Layer, Settings
from app.store import DEFAULT_REGION, S3Location, store_location
from app.tiles import PLAIN_TILE_NUMBER

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TEMPLATE = DEPLOY / "mapcascade.conf.template"
# The tile location, one per kind of store.
FOLDER_LOCATION = DEPLOY / "tiles-from-folder.conf.template"
S3_LOCATION = DEPLOY / "tiles-from-s3.conf.template"
# The headers of a hit, the same in either location.
HIT_HEADERS = DEPLOY / "tile-hit-headers.conf.template"
# Kept-alive connections to the store: a hit costs one request, not a TCP (or TLS) handshake.
S3_UPSTREAM = """
upstream mapcascade_store {{
    server {server};
    keepalive 32;
    keepalive_timeout 10s;
}}
"""
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def file_backed(layers: dict[str, Layer]) -> list[str]:
    """Layers whose tiles live in the store; archive layers are read by the API only."""
    return [name for name, layer in layers.items() if layer.source is None]


def tile_regex(layers: list[str], default: str | None) -> str:
    """The tile URLs nginx may answer from files: /tiles/{z}/{x}/{y}.png for the default layer,
    /tiles/{layer}/{z}/{x}/{y}.png for the others, with the numbers written canonically."""
    numbers = (
        f"(?<mapcascade_z>{PLAIN_TILE_NUMBER})/(?<mapcascade_x>{PLAIN_TILE_NUMBER})/"
        f"(?<mapcascade_y>{PLAIN_TILE_NUMBER})\\.png$"
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


def s3_values(settings: Settings, store: S3Location, store_url: str | None) -> dict[str, str]:
    """Where nginx reads a tile of an s3:// store: `{endpoint}/{bucket}/{prefix}/...`, with the
    endpoint as nginx reaches it (`store_url`, default AWS_ENDPOINT_URL or AWS S3's regional
    one)."""
    region = settings.aws_region or DEFAULT_REGION
    endpoint = urlsplit(
        store_url or settings.aws_endpoint_url or f"https://s3.{region}.amazonaws.com"
    )
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        raise ValueError(f"cannot proxy to the store endpoint {endpoint.geturl()!r}")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    hostname = _quoted(endpoint.hostname)
    server = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    path = "/".join(part for part in (store.bucket, store.prefix) if part)
    return {
        "store_upstream": S3_UPSTREAM.format(server=server),
        "store_scheme": endpoint.scheme,
        "store_host": _quoted(endpoint.netloc),
        "store_hostname": hostname,
        "store_path": _quoted(path),
    }


def render(
    settings: Settings, api: str, listen: str, tiles_dir: Path | None = None,
    template: Path = TEMPLATE, store_url: str | None = None,
) -> str:  # fmt: skip
    layers = file_backed(settings.layers)
    default = settings.default_layer.name
    values = {
        "api": api,
        "listen": listen,
        "default_layer": default,
        "tile_regex": tile_regex(layers, default if default in layers else None),
        "cors_origins": cors_entries(settings.cors_origins),
        "expose_headers": ", ".join(CORS_EXPOSED_HEADERS),
        "cache_max_age": str(settings.cache_max_age),
        "read_timeout": str(math.ceil(settings.wait_max) + 30),
    }
    store = store_location(settings)  # a StoreConfigError is a ValueError
    if isinstance(store, S3Location):
        values |= s3_values(settings, store, store_url)
        location = S3_LOCATION
    else:
        folder = tiles_dir or store
        values |= {"store_upstream": "", "tiles_dir": str(folder.resolve())}
        location = FOLDER_LOCATION
    values["hit_headers"] = fill(HIT_HEADERS, part(HIT_HEADERS), values).rstrip("\n")
    values["tile_location"] = fill(location, part(location), values)
    return fill(template, template.read_text(), values)


def part(template: Path) -> str:
    """A template filled into another: its first line says what it is, for its reader only."""
    return template.read_text().split("\n", 1)[1]


def fill(template: Path, text: str, values: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ValueError(f"{template}: unknown placeholder {m.group(0)}")
        return values[m.group(1)]

    return PLACEHOLDER.sub(value, text)


@click.command("nginx-config")
@click.option("--api", default="api:8000", show_default=True, help="host:port of the API.")
@click.option("--listen", default="80", show_default=True, help="nginx `listen` value.")
@click.option(
    "--tiles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The tile folder as nginx sees it (default: MAPCASCADE_DATA_DIR/tiles).",
)
@click.option(
    "--store-url",
    help="The S3 endpoint as nginx reaches it, for an s3:// store (default: AWS_ENDPOINT_URL).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the config here (default: standard output).",
)
def nginx_config(
    api: str, listen: str, tiles_dir: Path | None, store_url: str | None, out: Path | None
) -> None:
    """Print the nginx front's config for these settings (deploy/nginx/)."""
    try:
        text = render(Settings(), api, listen, tiles_dir, store_url=store_url)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if out is None:
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
