"""`mapcascade seed | truncate`: admin calls to a running service over HTTP, with live progress.

Exit codes: 0 done, 1 the seed failed or was cancelled (or the service is unreachable),
2 bad arguments or a request the service refused (4xx), 130 interrupted (the seed goes on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.cli.params import parse_bbox, parse_zooms

DEFAULT_URL = "http://127.0.0.1:8000"
F = TypeVar("F", bound=Callable[..., Any])


def area_options(command: F) -> F:
    options = [
        click.option("--bbox", required=True, metavar="W,S,E,N",
                     callback=lambda _ctx, _param, value: list(parse_bbox(value)),
                     help="Area in degrees; e.g. --bbox=32.58,0.34,32.60,0.36"),
        click.option("--zooms", required=True, metavar="Z|Z1-Z2",
                     callback=lambda _ctx, _param, value: parse_zooms(value),
                     help="One zoom or a range, e.g. 14-17."),
        click.option("--layer", default=None, help="Layer name (default: the service's default)."),
        click.option("--url", default=DEFAULT_URL, show_default=True, envvar="MAPCASCADE_URL",
                     help="The running service."),
        click.option("--token", default=None, envvar="MAPCASCADE_ADMIN_TOKEN",
                     help="Admin token [default: $MAPCASCADE_ADMIN_TOKEN]; none: loopback only."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)


def call(http: httpx.Client, method: str, path: str, **kwargs: object) -> dict:
    """One request; the service's own error message on a refusal."""
    try:
        r = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach {http.base_url}: {e}") from None
    try:
        body = r.json()
    except ValueError:
        body = {"error": r.text.strip()[:200] or r.reason_phrase}
    if r.is_success:
        return body
    message = f"{r.status_code}: {body.get('error', body)}"
    if r.is_client_error:
        raise click.UsageError(f"the service refused the request: {message}")
    raise click.ClickException(f"the service failed: {message}")


def area_body(bbox: list[float], zooms: tuple[int, int], layer: str | None) -> dict:
    body: dict = {"bbox": bbox, "minzoom": zooms[0], "maxzoom": zooms[1]}
    if layer:
        body["layer"] = layer
    return body


@click.command("seed")
@area_options
@click.option("--detach", is_flag=True, help="Submit, print the seed id and exit.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds between progress polls.")  # fmt: skip
def seed(
    bbox: list[float], zooms: tuple[int, int], layer: str | None, url: str, token: str | None,
    detach: bool, interval: float,
) -> None:  # fmt: skip
    """Pre-generate a bounding box over a zoom range, showing progress until it is done."""
    with client(url, token) as http:
        created = submit_seed(http, bbox, zooms, layer)
        if detach:
            click.echo(created["status_url"])
            return
        status = watch_seed(http, created, url, interval)
    if status["status"] != "done":
        raise SystemExit(1)


def submit_seed(
    http: httpx.Client, bbox: list[float], zooms: tuple[int, int], layer: str | None
) -> dict:
    created = call(http, "POST", "/seed", json=area_body(bbox, zooms, layer))
    click.echo(
        f"seed {created['id']}: {created['tiles']} tiles in {created['blocks']} blocks of layer "
        f"{created['layer']}, zooms {created['minzoom']}-{created['maxzoom']}"
    )
    return created


def watch_seed(http: httpx.Client, created: dict, url: str, interval: float) -> dict:
    """Follow a submitted seed with a progress bar to its end; print and return its status."""
    seed_id = created["id"]
    try:
        status = follow(http, seed_id, created["tiles"], interval, Console(stderr=True))
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; seed {seed_id} goes on on the server.", err=True)
        click.echo(f"cancel it with: curl -X DELETE {url.rstrip('/')}/seed/{seed_id}", err=True)
        raise SystemExit(130) from None
    tiles = status["tiles"]
    click.echo(
        f"seed {seed_id} {status['status']}: {tiles['done']}/{tiles['total']} tiles done "
        f"({tiles['generated']} generated, {tiles['skipped']} already there), "
        f"{tiles['failed']} failed"
    )
    return status


def follow(http: httpx.Client, seed_id: str, total: int, interval: float, console: Console) -> dict:
    """Poll the seed's status into a progress bar until it is finished."""
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("tiles  {task.fields[rate]}  ETA {task.fields[eta]}"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(seed_id, total=total, rate="-", eta="-")
        while True:
            status = call(http, "GET", f"/seed/{seed_id}")
            tiles = status["tiles"]
            rate, eta = status["rate_tiles_per_s"], status["eta_s"]
            progress.update(
                task,
                completed=tiles["done"] + tiles["failed"],
                description=f"{seed_id} {status['status']}",
                rate=f"{rate:.1f} tiles/s" if rate else "-",
                eta=_duration(eta) if eta is not None else "-",
            )
            if status["status"] not in ("queued", "running"):
                return status
            time.sleep(interval)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@click.command("truncate")
@area_options
def truncate(
    bbox: list[float], zooms: tuple[int, int], layer: str | None, url: str, token: str | None
) -> None:
    """Remove the tiles of a bbox and zoom range, and every tile generated from them below."""
    with client(url, token) as http:
        result = call(http, "DELETE", "/tiles", json=area_body(bbox, zooms, layer))
    low, high = result["zooms"]
    click.echo(
        f"removed {result['removed']} tiles ({result['blocks_removed']} blocks) of layer "
        f"{result['layer']}, zooms {low}-{high}"
    )
