"""Training samples from a CSCMG-layout data set, with the augmentations the paper lacks.

Layout (what `mapcascade dataset build` writes, and the official SCGM data code reads):
`{rs_256,map_256,ref_scale_2_256,ref_scale_4_256}/{z}_{x}_{y}.png` plus tile-list CSVs with a
`tilename` column. A tile's reference images are already cut and upsampled to its frame, so a
256 px tile (or a crop of it) is a miniature block: the models are convolutional and serve
512 px blocks with the same per-pixel statistics.

Every random draw goes through one explicit torch.Generator, so a run resumed from a
checkpoint (which stores that generator's state) draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.scale import ScaleInfo

logger = logging.getLogger(__name__)

FOLDERS: dict[str | int, str] = {"imagery": "rs_256", "map": "map_256", 2: "ref_scale_2_256",
                                 4: "ref_scale_4_256"}  # fmt: skip
# The knowledge mask (dataset format 2; a tile without one is known everywhere): 255 the map is
# known, 128 the pixel is known to be none of the labelled classes, 0 nothing is known.
MASK_FOLDER = "mask_256"
KNOWN, NOT_LABELLED = 255, 128


@dataclass
class Augment:
    """Probabilities and strengths of the train-time augmentations."""

    reference_dropout: float = 0.15  # the root zoom is generated without a reference
    # A sample one zoom shallower: a crop twice the size, halved (imagery averaged, map and
    # knowledge decimated), without its reference, as a root block. Real sites come as z20 tiles
    # mostly, while a cascade over real imagery starts at z19.
    zoom_out: float = 0.0
    span4: float = 0.6  # 4X where the tile has one, else 2X (the service prefers 4X)
    degrade: float = 0.9  # generated references at serve time are never clean
    blur_sigma: float = 1.5  # max Gaussian blur of the reference, px
    noise_std: float = 0.06  # max additive noise, in [-1, 1] units
    jitter: float = 0.06  # max per-channel gain and offset deviation
    shift: int = 3  # max translation, px
    dihedral: bool = True  # joint flips/rot90 of imagery, reference and target
    # Imagery from other sensors, seasons and light: the synthetic world's colours are not the
    # real ones, and real sites differ from each other.
    # Mild: roof and vegetation colours are themselves a strong cue across sites (a colour rule
    # fitted on the training sites scores building IoU 0.45 on Zanzibar), so the jitter only
    # blurs them a little (model/weights/demo/README.md: what a stronger one did).
    imagery_jitter: float = 0.5  # probability of a colour/contrast/saturation change
    imagery_gain: float = 0.08  # max per-channel gain deviation
    imagery_saturation: float = 0.2  # max saturation change (x 1 +- this)
    imagery_blur: float = 0.3  # probability of a Gaussian blur (sigma up to 1.2 px)
    imagery_noise: float = 0.04  # max sensor noise, in [-1, 1] units


@dataclass
class Batch:
    imagery: torch.Tensor  # B x 3 x H x W in [-1, 1]
    target: torch.Tensor  # B x 3 x H x W map in [-1, 1]
    reference: torch.Tensor  # B x 3 x H x W in [-1, 1]; zeros where has_reference is False
    has_reference: torch.Tensor  # B bools
    scales: list[ScaleInfo]
    # B x 1 x H x W uint8 knowledge (KNOWN / NOT_LABELLED / 0), and per sample the colours
    # ([-1, 1]) of the labelled classes that NOT_LABELLED pixels must not take; None: all known.
    knowledge: torch.Tensor | None = None
    excluded_colours: list[torch.Tensor] | None = None


def tile_latitude(z: int, y: float) -> float:
    """Latitude of global tile row y (fractional) at zoom z."""
    n = math.pi - 2 * math.pi * y / 2**z
    return math.degrees(math.atan(math.sinh(n)))


def read_tile_list(root: Path, split: str | None) -> list[str]:
    """Tile names of a split: `{split}.csv` (or any `*{split}*.csv`) with a tilename column;
    without a split, every map tile."""
    if split is None:
        return sorted(p.stem for p in (root / FOLDERS["map"]).glob("*.png"))
    candidates = [root / f"{split}.csv", *sorted(root.glob(f"*{split}*.csv"))]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{root} has no tile list for split {split!r} ({split}.csv)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "tilename" not in rows[0]:
        raise ValueError(f"{path} has no 'tilename' column")
    return [Path(row["tilename"]).stem for row in rows]


def _load(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def parse_data_arg(text: str | Path) -> tuple[Path, float]:
    """`DIR` or `DIR*W`: a data set folder and its sampling weight per tile (default 1)."""
    path, sep, weight = str(text).rpartition("*")
    if not sep:
        return Path(text), 1.0
    try:
        w = float(weight)
    except ValueError:
        raise ValueError(f"bad weight in {text!r}: expected DIR*NUMBER") from None
    if not w > 0:
        raise ValueError(f"weight of {path} must be > 0, got {w}")
    return Path(path), w


def excluded_colours(root: Path) -> torch.Tensor:
    """K x 3 colours in [-1, 1] of the classes a data set labels partially (dataset.json's
    `labelled_colours`); empty when its labels are complete."""
    meta = root / "dataset.json"
    colours = json.loads(meta.read_text()).get("labelled_colours", []) if meta.is_file() else []
    return torch.tensor(colours, dtype=torch.float32).reshape(-1, 3) / 127.5 - 1.0


class TileDataset:
    """All tiles of a split, held in memory as uint8 (a few thousand tiles are a few GB)."""

    def __init__(
        self, roots: str | Path | Sequence[str | Path], split: str | None = "train"
    ) -> None:
        # Several data sets (one per built area, `DIR*W` weighs one) train as one.
        entries = [roots] if isinstance(roots, str | Path) else list(roots)
        parsed = [parse_data_arg(r) for r in entries]
        self.roots = [p for p, _ in parsed]
        self.names: list[str] = []
        self.zooms: list[int] = []
        self.lats: list[float] = []
        self.weights: list[float] = []
        self.excluded: list[torch.Tensor] = []
        self.images: dict[str | int, list[torch.Tensor | None]] = {k: [] for k in FOLDERS}
        self.images["mask"] = []
        for root, weight in parsed:
            colours = excluded_colours(root)
            for name in read_tile_list(root, split):
                self._add(root, name, weight, colours)
        if not self.names:
            where = ", ".join(str(r) for r in self.roots)
            raise ValueError(f"no usable tiles in {where} (split {split!r})")
        self.sampling = torch.tensor(self.weights, dtype=torch.float64)
        self.uniform = len(set(self.weights)) == 1
        self.partial = any(m is not None for m in self.images["mask"])
        logger.info("loaded %d tiles from %d data sets", len(self.names), len(self.roots))

    def _add(self, root: Path, name: str, weight: float, colours: torch.Tensor) -> None:
        paths = {k: root / folder / f"{name}.png" for k, folder in FOLDERS.items()}
        if not (paths["imagery"].is_file() and paths["map"].is_file()):
            logger.warning("tile %s lacks imagery or map; skipped", name)
            return
        z, _, y = (int(v) for v in name.split("_"))
        self.names.append(name)
        self.zooms.append(z)
        self.lats.append(tile_latitude(z, y + 0.5))
        self.weights.append(weight)
        self.excluded.append(colours)
        for key, path in paths.items():
            self.images[key].append(_load(path) if path.is_file() else None)
        mask = root / MASK_FOLDER / f"{name}.png"
        self.images["mask"].append(_load_mask(mask) if mask.is_file() else None)

    def _draw(self, rng: torch.Generator) -> int:
        if self.uniform:  # the same draws as before weights existed
            return int(torch.randint(len(self), (1,), generator=rng))
        return int(torch.multinomial(self.sampling, 1, generator=rng))

    def __len__(self) -> int:
        return len(self.names)

    def map_batch(self, batch_size: int, crop: int, rng: torch.Generator) -> torch.Tensor:
        """Map crops only (autoencoder training), flipped/rotated at random."""
        out = []
        for _ in range(batch_size):
            i = self._draw(rng)
            target = _to_float(self.images["map"][i])
            out.append(_dihedral(_crop([target], crop, rng)[0], rng))
        return torch.stack(out)

    def batch(self, batch_size: int, crop: int, rng: torch.Generator, augment: Augment) -> Batch:
        imagery, target, reference, has_ref, scales = [], [], [], [], []
        known: list[torch.Tensor] = []
        excluded: list[torch.Tensor] = []
        for _ in range(batch_size):
            i = self._draw(rng)
            span = self._pick_span(i, rng, augment)
            img = _to_float(self.images["imagery"][i])
            tgt = _to_float(self.images["map"][i])
            ref_u8 = self.images[span][i] if span else None
            ref = _to_float(ref_u8) if ref_u8 is not None else torch.zeros_like(img)
            mask = self.images["mask"][i]
            if mask is None:
                mask = torch.full((1, *img.shape[1:]), KNOWN, dtype=torch.uint8)
            zoom = self.zooms[i]
            if augment.zoom_out > 0 and self._zoom_out(img, crop, rng, augment):
                img, tgt, mask = _crop([img, tgt, mask], 2 * crop, rng)
                img, tgt, mask = F.avg_pool2d(img[None], 2)[0], tgt[:, ::2, ::2], mask[:, ::2, ::2]
                span, ref, zoom = 0, torch.zeros_like(img), zoom - 1
            else:
                img, tgt, ref, mask = _crop([img, tgt, ref, mask], crop, rng)
            if augment.dihedral:
                k, flip = _draw_dihedral(rng)
                img, tgt, ref, mask = (_apply_dihedral(t, k, flip) for t in (img, tgt, ref, mask))
            if span and float(torch.rand((), generator=rng)) < augment.degrade:
                ref = degrade_reference(ref, rng, augment)
            if augment.imagery_jitter > 0:
                img = jitter_imagery(img, rng, augment)
            scales.append(ScaleInfo.with_span(zoom, lat=self.lats[i], span=span))
            imagery.append(img)
            target.append(tgt)
            reference.append(ref)
            has_ref.append(span != 0)
            known.append(mask)
            excluded.append(self.excluded[i])
        return Batch(
            torch.stack(imagery),
            torch.stack(target),
            torch.stack(reference),
            torch.tensor(has_ref),
            scales,
            torch.stack(known) if self.partial else None,
            excluded if self.partial else None,
        )

    @staticmethod
    def _zoom_out(image: torch.Tensor, crop: int, rng: torch.Generator, augment: Augment) -> bool:
        drawn = float(torch.rand((), generator=rng))  # drawn whatever the tile's size
        return drawn < augment.zoom_out and 2 * crop <= min(image.shape[-2:])

    def _pick_span(self, i: int, rng: torch.Generator, augment: Augment) -> int:
        # Draw every number whatever the outcome, so the stream stays aligned across tiles.
        drop, four = torch.rand(2, generator=rng).tolist()
        available = [s for s in (4, 2) if self.images[s][i] is not None]
        if not available or drop < augment.reference_dropout:
            return 0
        if 4 in available and (four < augment.span4 or 2 not in available):
            return 4
        return 2 if 2 in available else 4


def _load_mask(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
    return torch.from_numpy(array.copy())[None]


def _to_float(image: torch.Tensor | None) -> torch.Tensor:
    assert image is not None  # imagery and maps always are: `_add` skips tiles without them
    return image.float() / 127.5 - 1.0


def _crop(images: list[torch.Tensor], size: int, rng: torch.Generator) -> list[torch.Tensor]:
    height, width = images[0].shape[-2:]
    if size > min(height, width):
        raise ValueError(f"crop {size} is larger than the {width}x{height} tiles")
    top = int(torch.randint(height - size + 1, (1,), generator=rng))
    left = int(torch.randint(width - size + 1, (1,), generator=rng))
    return [t[..., top : top + size, left : left + size] for t in images]


def _draw_dihedral(rng: torch.Generator) -> tuple[int, bool]:
    k, flip = torch.randint(0, 4, (2,), generator=rng).tolist()
    return k, flip % 2 == 1


def _apply_dihedral(image: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    image = torch.rot90(image, k, dims=(-2, -1))
    return image.flip(-1) if flip else image


def _dihedral(image: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    return _apply_dihedral(image, *_draw_dihedral(rng))


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)[0]


def _shift(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate by (dx, dy) px, repeating the edge (a misregistered reference, not a wrap)."""
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return image
    height, width = image.shape[-2:]
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0]
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def degrade_reference(
    reference: torch.Tensor, rng: torch.Generator, augment: Augment
) -> torch.Tensor:
    """A ground-truth reference made to look generated: blurred, shifted, colour-jittered and
    noisy. Shape and the [-1, 1] range are kept. Cascaded diffusion models train on corrupted
    low-resolution conditions so that their own imperfect outputs do not compound downstream."""
    u = torch.rand(3, generator=rng).tolist()
    shift = torch.randint(-augment.shift, augment.shift + 1, (2,), generator=rng).tolist()
    gain = 1 + augment.jitter * (2 * torch.rand(3, 1, 1, generator=rng) - 1)
    offset = augment.jitter * (2 * torch.rand(3, 1, 1, generator=rng) - 1)
    noise = torch.randn(reference.shape, generator=rng)
    out = reference
    if augment.blur_sigma > 0 and u[0] > 0.3:
        out = _gaussian_blur(out, 0.3 + u[1] * augment.blur_sigma)
    out = _shift(out, int(shift[0]), int(shift[1]))
    out = out * gain + offset
    out = out + noise * (u[2] * augment.noise_std)
    return out.clamp(-1.0, 1.0)


def jitter_imagery(image: torch.Tensor, rng: torch.Generator, augment: Augment) -> torch.Tensor:
    """Imagery as another sensor, light or season would show it: per-channel gain and offset,
    saturation, sometimes blur, sensor noise. Every number is drawn whatever is applied."""
    u = torch.rand(4, generator=rng).tolist()
    gain = 1 + augment.imagery_gain * (2 * torch.rand(3, 1, 1, generator=rng) - 1)
    offset = augment.imagery_gain / 2 * (2 * torch.rand(3, 1, 1, generator=rng) - 1)
    noise = torch.randn(image.shape, generator=rng)
    if u[0] >= augment.imagery_jitter:
        return image
    grey = image.mean(dim=0, keepdim=True)
    saturation = 1 + augment.imagery_saturation * (2 * u[1] - 1)
    out = grey + (image - grey) * saturation
    out = out * gain + offset
    if u[2] < augment.imagery_blur:
        out = _gaussian_blur(out, 0.3 + 0.9 * u[3])
    out = out + noise * (u[3] * augment.imagery_noise)
    return out.clamp(-1.0, 1.0)
