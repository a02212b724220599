"""Helpers for the imagery tests: fixture paths, direct PNG stitching, a scripted tile server."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "imagery"
KAMPALA = FIXTURES / "kampala-oam"
GEOTIFF = FIXTURES / "geotiff" / "pix4d_alpha_nodata.tif"
# The full shared data set, present beside the clone in CI and on development machines.
SHARED_KAMPALA = REPO / ".." / "shared" / "data" / "imagery" / "kampala-oam"


def stitch_pngs(root: Path, z: int, xs: range, ys: range) -> tuple[np.ndarray, np.ndarray]:
    """The expected mosaic, built straight from the PNG files: (rgb, alpha > 0)."""
    rgb = np.zeros((len(ys) * 256, len(xs) * 256, 3), np.uint8)
    mask = np.zeros(rgb.shape[:2], bool)
    for row, y in enumerate(ys):
        for col, x in enumerate(xs):
            path = root / str(z) / str(x) / f"{y}.png"
            if not path.exists():
                continue
            tile = np.asarray(Image.open(path).convert("RGBA"))
            window = np.s_[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]
            rgb[window] = tile[..., :3]
            mask[window] = tile[..., 3] > 0
    return rgb, mask


@dataclass
class TileServer:
    """A scripted tile server: files from `root`, or the next scripted answers for a path."""

    root: Path
    base_url: str = ""
    # path -> answers to give first, in order: an HTTP status, ("sleep", seconds) or "trickle".
    script: dict[str, list[object]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    user_agents: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, path: str) -> object:
        with self.lock:
            self.requests[path] += 1
            queue = self.script.get(path) or self.script.get("*")
            return queue.pop(0) if queue else None


def make_handler(server: TileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0]
            with server.lock:
                server.user_agents.append(self.headers.get("User-Agent", ""))
                server.headers.append(dict(self.headers.items()))
            answer = server.next_answer(path)
            try:
                if isinstance(answer, int):
                    self.send_response(answer)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif isinstance(answer, tuple) and answer[0] == "sleep":
                    # Interruptible, so the fixture can stop every handler thread at teardown.
                    server.stopping.wait(float(answer[1]))
                    self._send_file(path)
                elif answer == "trickle":
                    self._trickle()
                else:
                    self._send_file(path)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on us, as it should

        def _send_file(self, path: str) -> None:
            file = server.root / path.lstrip("/")
            if not file.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _trickle(self) -> None:
            # Headers at once, then one byte every 0.2 s: never idle long enough for a
            # per-read timeout, but far too slow overall.
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not server.stopping.wait(0.2):
                self.wfile.write(b"x")
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    return Handler
