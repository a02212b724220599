"""The QGIS picture of docs/clients.md: a fresh `mapcascade serve` (embedded defaults, a temp
data folder), the view seeded, then QGIS (headless) adds the layer from the WMTS capabilities
and renders it to a PNG. Everything started here is stopped before it exits.

Run with Debian's Python, which has the QGIS bindings (apt-get install qgis python3-qgis):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_render.py docs/img/qgis-wmts.png

`--python` is the interpreter that runs mapcascade (default: .venv/bin/python).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HALF_WORLD = math.pi * 6378137.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(python: str, data_dir: Path, timeout: float = 180) -> Iterator[str]:
    """`mapcascade serve` on a free loopback port until /ready; stopped (its whole process
    group: API, worker, Redis) on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"mapcascade serve exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"mapcascade serve not ready after {timeout:.0f} s")
            ready = base + "/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(ready, timeout=2) as r:
                if r.status == 200:
                    break
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: serve stops its children
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def lonlat(x: float, y: float) -> tuple[float, float]:
    lon = math.degrees(x / 6378137.0)
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat


def render(caps_url: str, layer: str, matrix_set: str, extent: tuple[float, ...],
           size: tuple[int, int], out: Path) -> None:  # fmt: skip
    from qgis.core import (
        QgsApplication,
        QgsCoordinateReferenceSystem,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsRasterLayer,
        QgsRectangle,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    app = QgsApplication([], False)
    app.initQgis()
    try:
        # The data source URI QGIS's "Add WMS/WMTS Layer" dialog writes for a WMTS layer.
        uri = (f"contextualWMSLegend=0&crs=EPSG:3857&dpiMode=7&featureCount=10&format=image/png"
               f"&layers={layer}&styles=default&tileMatrixSet={matrix_set}"
               f"&url={caps_url}")  # fmt: skip
        wmts = QgsRasterLayer(uri, layer, "wms")
        if not wmts.isValid():
            raise SystemExit(f"QGIS could not add the WMTS layer: {wmts.error().summary()}")
        settings = QgsMapSettings()
        settings.setLayers([wmts])
        settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
        settings.setExtent(QgsRectangle(*extent))
        settings.setOutputSize(QSize(*size))
        settings.setBackgroundColor(QColor("white"))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        for error in job.errors():
            print(f"QGIS render error: {error.layerID}: {error.message}", file=sys.stderr)
        if not job.renderedImage().save(str(out), "PNG"):
            raise SystemExit(f"QGIS could not write {out}")
    finally:
        app.exitQgis()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--layer", default="demo")
    ap.add_argument("--zoom", type=int, default=16, help="the tile matrix QGIS draws")
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--colors", type=int, default=64, help="palette size of the PNG")
    ap.add_argument("--max-bytes", type=int, default=300_000, help="docs images stay small")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, serve(args.python, Path(tmp) / "data") as base:
        with urllib.request.urlopen(f"{base}/{args.layer}/tiles.json") as r:
            tilejson = json.load(r)
        root_zoom, max_zoom = tilejson["minzoom"], tilejson["maxzoom"]
        lon, lat = tilejson["center"][:2]
        cx = math.radians(lon) * 6378137.0
        cy = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * 6378137.0
        resolution = 2 * HALF_WORLD / 256 / 2**args.zoom
        half_w, half_h = args.width * resolution / 2, args.height * resolution / 2
        extent = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        west, south = lonlat(extent[0], extent[1])
        east, north = lonlat(extent[2], extent[3])
        bbox = ",".join(f"{v:.6f}" for v in (west, south, east, north))
        # Every tile in view final before QGIS looks: seed it, coarse to fine.
        subprocess.run(
            [args.python, "-m", "app.cli", "seed", "--url", base, "--layer", args.layer,
             f"--bbox={bbox}", "--zooms", f"{root_zoom}-{args.zoom}"],
            cwd=ROOT, check=True,
        )  # fmt: skip
        matrix_set = f"GoogleMapsCompatible-{root_zoom}-{max_zoom}"
        caps_url = base + "/wmts/1.0.0/WMTSCapabilities.xml"
        render(caps_url, args.layer, matrix_set, extent, (args.width, args.height), args.out)

    from PIL import Image  # Debian's python3-pil, a dependency of python3-qgis's tools

    with Image.open(args.out) as img:
        small = img.convert("RGB").quantize(colors=args.colors, dither=Image.Dither.NONE)
    small.save(args.out, optimize=True)
    if args.out.stat().st_size > args.max_bytes:
        raise SystemExit(f"{args.out} is {args.out.stat().st_size} bytes > {args.max_bytes}")
    print(f"{args.out}: {args.width}x{args.height}, {args.out.stat().st_size / 1000:.0f} kB")


if __name__ == "__main__":
    main()
