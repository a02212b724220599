"""Diagnostics of a generator on real imagery (issue 13; numbers in model/weights/demo/README.md).

    python scripts/real_diagnostics.py head MODEL [SITE ...]
        building IoU of the MFEncoder's map head alone (its sketch of the imagery) on
        every labelled tile of the held-out sites at z19-20, beside the colour rule
    python scripts/real_diagnostics.py val MODEL [DATASET ...]
        building IoU of the map head alone on the validation tiles (val.csv) of built real data
        sets (default ds/real-banepa ds/real-kampala): tiles of the training sites never
        trained on, to choose between heads without looking at the held-out sites
    python scripts/real_diagnostics.py probe MODEL DATASET BLOCK
        how much one 512 px block of a built data set changes when one input changes (the true
        reference instead of none, flat grey instead of the imagery, another noise seed)

MODEL is a generator folder or a config name; BLOCK a block name of DATASET/rs_512/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mercantile
import numpy as np
import torch
from PIL import Image

from model import BlockRequest, Generator, ScaleInfo, metrics
from model.pipeline import image_to_tensor, tensor_to_image
from model.train_data import read_tile_list
from worker.dataset import open_site
from worker.evaluate import colour_rule, training_colour_counts
from worker.world import CLASS_COLOURS, CLASSES
from worker.world.labels import KNOWN, UNKNOWN


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return np.count_nonzero(pred & truth) / union if union else float("nan")


def drawn_buildings(encoder: torch.nn.Module, imagery: Image.Image) -> np.ndarray:
    """Where the map head's sketch of the imagery is nearest the building colour."""
    with torch.no_grad():
        rgb = np.asarray(tensor_to_image(encoder.draw_map(image_to_tensor(imagery)[None])[0]))
    return metrics.class_map(rgb, CLASS_COLOURS) == CLASSES.index("building")


def known_buildings(labels: np.ndarray, knowledge: np.ndarray) -> np.ndarray:
    building = metrics.class_map(labels, CLASS_COLOURS) == CLASSES.index("building")
    return (knowledge == KNOWN) & building


def head(model: str, sites: list[str]) -> None:
    encoder = Generator.load(model).pipeline.mfencoder.eval()
    for name in sites or ["zanzibar", "banepa-south"]:
        _, source, labels = open_site(name)
        for z in (19, 20):
            drawn, truth, rule = [], [], []
            for t in mercantile.tiles(*labels.extent, zooms=[z]):
                got = labels.tile(t.z, t.x, t.y)
                imagery = source.read(t.z, t.x, t.y, 1, 1)
                if got is None or imagery.empty:
                    continue
                valid = imagery.mask & (got[1] > UNKNOWN)
                drawn.append(drawn_buildings(encoder, Image.fromarray(imagery.rgb))[valid])
                truth.append(known_buildings(got[0], got[1])[valid])
                counts = training_colour_counts(z, "building")
                rule.append(colour_rule(imagery.rgb, counts)[valid])
            d, t_, r = (np.concatenate(a) for a in (drawn, truth, rule))
            print(f"{name} z{z}: map head {iou(d, t_):.3f}, colour rule {iou(r, t_):.3f} "
                  f"({len(drawn)} tiles)")  # fmt: skip


def val(model: str, datasets: list[str]) -> None:
    encoder = Generator.load(model).pipeline.mfencoder.eval()
    scores = []
    for dataset in datasets or ["ds/real-banepa", "ds/real-kampala"]:
        root = Path(dataset)
        drawn, truth = [], []
        for name in read_tile_list(root, "val"):
            imagery = Image.open(root / "rs_256" / f"{name}.png").convert("RGB")
            labels = np.asarray(Image.open(root / "map_256" / f"{name}.png").convert("RGB"))
            knowledge = np.asarray(Image.open(root / "mask_256" / f"{name}.png").convert("L"))
            valid = knowledge > UNKNOWN
            drawn.append(drawn_buildings(encoder, imagery)[valid])
            truth.append(known_buildings(labels, knowledge)[valid])
        scores.append(iou(np.concatenate(drawn), np.concatenate(truth)))
        print(f"{dataset} val: map head {scores[-1]:.3f} ({len(drawn)} tiles)")
    print(f"mean {np.mean(scores):.3f}")


def probe(model: str, dataset: str, block: str) -> None:
    generator = Generator.load(model)
    root = Path(dataset)
    imagery = Image.open(root / "rs_512" / f"{block}.png").convert("RGB")
    reference = Image.open(root / "ref_2_512" / f"{block}.png").convert("RGB")
    zoom = int(block.split("_")[0]) + 1  # blocks are named by their parent tile

    def draw(image: Image.Image, ref: Image.Image | None, seed: int) -> np.ndarray:
        scale = ScaleInfo.with_span(zoom, lat=0.0, span=2 if ref else 0)
        out = generator.generate([BlockRequest(image, ref, scale, seed)])[0]
        return np.asarray(out, dtype=np.float64)

    base = draw(imagery, None, 1)
    grey = Image.new("RGB", imagery.size, (128, 128, 128))
    for what, other in (("the true reference instead of none", draw(imagery, reference, 1)),
                        ("flat grey instead of the imagery", draw(grey, None, 1)),
                        ("another noise seed", draw(imagery, None, 2))):  # fmt: skip
        print(f"{what}: mean absolute change {np.abs(base - other).mean():.1f} (0-255)")


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "head" and args:
        head(args[0], args[1:])
    elif command == "val" and args:
        val(args[0], args[1:])
    elif command == "probe" and len(args) == 3:
        probe(*args)
    else:
        sys.exit(__doc__)
