"""`mapcascade eval` end to end with the tiny random model on a one-tile held-out area."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli.evaluate import evaluate


@pytest.mark.slow
def test_eval_writes_a_full_report(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["--model", "tiny", "--area", "helsinki-heldout-tiny", "--zooms", "14-18",
            "--steps", "2", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(evaluate, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"].startswith("tiny-") and report["split"] == "heldout"
    assert report["blocks_generated"] == 5  # one block per zoom, z14..z18
    assert set(report["per_zoom"]) == {"14", "15", "16", "17", "18"}
    z18 = report["per_zoom"]["18"]
    for who in ("model", "floor_flat_mean", "floor_reference"):
        assert set(z18[who]) == {"psnr_y", "ssim_y", "iou"}
        assert set(z18[who]["iou"]) == {"background", "road", "building", "water",
                                        "vegetation", "mean"}  # fmt: skip
    assert report["per_zoom"]["14"]["floor_reference"] is None  # the root has no reference
    for key in ("seam_inner", "seam_inner_truth", "cross_zoom_psnr", "cross_zoom_psnr_truth"):
        assert isinstance(report["overall"][key], float)
    assert report["seconds_per_block_median"] > 0 and report["context_margin"] == 64
    assert report["reference_span"] == 2  # the demo layer's
    assert sorted(report["mosaics"]) == [f"mosaic_z{z}.png" for z in range(14, 19)]
    assert all((out / name).stat().st_size > 0 for name in report["mosaics"])


@pytest.mark.slow
def test_eval_scores_a_held_out_real_site_on_its_labelled_class(tmp_path: Path) -> None:
    # banepa-south: real drone imagery, OSM footprints; cascaded from z19 as served.
    out = tmp_path / "eval"
    args = ["--model", "tiny", "--area", "banepa-south", "--steps", "1", "--out", str(out)]
    result = CliRunner().invoke(evaluate, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "heldout" and report["root_zoom"] == 19
    assert set(report["per_zoom"]) == {"19", "20"}
    z20 = report["per_zoom"]["20"]
    floors = ("floor_all_background", "floor_all_labelled_class", "floor_colour_rule",
              "floor_reference")  # fmt: skip
    for who in ("model", *floors):
        assert set(z20[who]["iou"]) == {"building", "mean"}, who  # labelled classes only
    assert report["per_zoom"]["19"]["floor_reference"] is None
    assert z20["floor_all_background"]["iou"]["building"] == 0.0
    # All-building scores the share of building pixels; the colour rule learned something.
    assert 0.05 < z20["floor_all_labelled_class"]["iou"]["building"] < 0.5
    assert z20["floor_colour_rule"]["iou"]["building"] > 0.1
    assert 0 < z20["labelled_share"] < 1 and isinstance(report["overall"]["seam_block"], float)
    assert report["mosaics"] == ["mosaic_z19.png", "mosaic_z20.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "x>=1"),
        (["--strength", "0"], "0<x<=1"),
        (["--strength", "1.01"], "0<x<=1"),
        (["--strength", "0.5"], "needs a model with a map head"),
        (["--zooms", "18-14"], "the first zoom must not exceed the second"),
        (["--zooms", "a-b"], "is not a zoom (15) or a zoom range"),
        (["--zooms", "12-14"], "root zoom 14"),
        (["--area", "atlantis"], "atlantis"),
        (["--area", "zanzibar", "--zooms", "17-20"], "root zoom 19"),
        (["--model", "no-such-model"], "neither a configuration"),
        (["--bbox", "1,2,3"], "has 3 numbers; give four: W,S,E,N"),
        (["--margin", "48"], "not a multiple of 32"),
        (["--reference-span", "3"], "'3' is not one of '2', '4'"),
        (["--margin", "512"], "0<=x<=256"),
        (["--margin", "x"], "is not a valid integer"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "eval"
    base = ["--model", "tiny", "--area", "helsinki-heldout-tiny", "--out", str(out)]
    result = CliRunner().invoke(evaluate, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (out / "report.json").exists()
