"""The README screenshots: a viewer page (Leaflet, or `--page openlayers|maplibre`) of a fresh
`mapcascade serve` (default demo layer, or `--layer banepa`), taken once every tile on screen is
final.

    .venv/bin/python tests/browser/screenshot.py docs/img/leaflet.png
    .venv/bin/python tests/browser/screenshot.py --layer banepa --opacity 70 docs/img/banepa.png
    .venv/bin/python tests/browser/screenshot.py --page maplibre docs/img/maplibre.png
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from live_service import CHROMIUM, CHROMIUM_ARGS, WEBGL_ARGS, serve
from PIL import Image
from playwright.sync_api import sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=900)
    ap.add_argument("--height", type=int, default=560)
    ap.add_argument("--colors", type=int, default=256, help="palette size of the PNG")
    ap.add_argument("--max-bytes", type=int, default=300_000, help="README images stay small")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the tiles to finish")
    ap.add_argument("--layer", help="layer to show (default: the default layer)")
    ap.add_argument("--opacity", type=int, default=100, help="map over imagery, 0-100")
    ap.add_argument("--page", choices=["", "openlayers", "maplibre"], default="", help="viewer")
    args = ap.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(Path(tmp) / "data") as base,
        sync_playwright() as pw,
    ):
        chromium_args = WEBGL_ARGS if args.page == "maplibre" else CHROMIUM_ARGS
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(base + "/" + args.page + (f"?layer={args.layer}" if args.layer else ""))
            deadline = time.monotonic() + args.timeout
            # Final everywhere, twice in a row (a new tile may start loading in between).
            calm = 0
            while calm < 2:
                if time.monotonic() > deadline:
                    raise SystemExit(f"tiles not final: {page.inner_text('#status')!r}")
                done = page.evaluate(
                    "window.mapcascadeViewer !== undefined && "
                    "Array.from(mapcascadeViewer.states.states.values())"
                    ".every(s => s === 'final') && "
                    "mapcascadeViewer.states.states.size > 0"
                )
                calm = calm + 1 if done else 0
                page.wait_for_timeout(1000)
            page.fill("#opacity", str(args.opacity))
            page.wait_for_timeout(1500)  # the imagery layer refreshes after the last block
            png = page.screenshot()
        finally:
            browser.close()

    # A palette keeps the file small; maps have few colours to begin with.
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=args.colors)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    if out.tell() > args.max_bytes:
        raise SystemExit(f"screenshot is {out.tell()} bytes, over {args.max_bytes}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(out.getvalue())
    print(f"wrote {args.out} ({out.tell()} bytes)")


if __name__ == "__main__":
    main()
