"""Overlay colours at known pixels, the case grid and the heatmap."""

import numpy as np
import pytest
from PIL import Image

from hanet_jax.eval.overlays import (FN_COLOR, FP_COLOR, TP_COLOR, case_grid, heatmap, jet, overlay,
                           select_cases)

IMAGE = np.full((4, 4), 100, np.uint8)
GT = np.zeros((4, 4), bool)
GT[0, 0] = GT[0, 1] = True        # (0,0) found, (0,1) missed
PRED = np.zeros((4, 4), bool)
PRED[0, 0] = PRED[3, 3] = True    # (3,3) false alarm


def test_overlay_colours_at_known_pixels():
    out = overlay(IMAGE, PRED, GT, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == TP_COLOR == (0, 255, 0)
    assert tuple(out[0, 1]) == FN_COLOR == (0, 0, 255)
    assert tuple(out[3, 3]) == FP_COLOR == (255, 0, 0)
    assert tuple(out[2, 2]) == (100, 100, 100)  # true negative untouched


def test_overlay_blends():
    out = overlay(IMAGE[..., None], PRED, GT, alpha=0.5)
    assert tuple(out[0, 0]) == (50, 178, 50)    # rint(0.5·100 + 0.5·255) = rint(177.5) = 178
    assert tuple(out[3, 3]) == (178, 50, 50)
    assert tuple(out[1, 1]) == (100, 100, 100)
    with pytest.raises(ValueError, match="must match"):
        overlay(IMAGE, PRED[:3], GT)


def test_select_cases():
    dice = {"a": 0.9, "b": 0.1, "c": float("nan"), "d": 0.5, "e": 0.7}
    assert select_cases(dice) == [("best", "a"), ("median", "d"), ("worst", "b")]


def test_case_grid_writes_one_png(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for label, dice in (("best", 0.95), ("median", 0.7), ("worst", 0.1)):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        gt = np.zeros((64, 64), bool)
        gt[20:40, 20:44] = True
        pred = np.roll(gt, int(20 * (1 - dice)), axis=1)
        entries.append(dict(label=label, stem=f"case_{label}", image=image, gt=gt, pred=pred, dice=dice))
    path = tmp_path / "cases.png"
    case_grid(entries, path)
    with Image.open(path) as im:
        assert im.mode == "RGB"
        assert im.size == (4 * 64 + 5 * 4, 18 + 3 * (18 + 64 + 4) + 4)


def test_jet_and_heatmap():
    assert tuple(jet(0.0)) == (0, 0, 128) and tuple(jet(1.0)) == (128, 0, 0)
    assert tuple(jet(0.5)) == (128, 255, 128)
    image = np.zeros((32, 32), np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[0, 0] = 1.0
    out = heatmap(cam, image, alpha=1.0)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert tuple(out[31, 31]) == (0, 0, 128)          # cam minimum -> dark blue
    assert out[0, 0, 0] > out[0, 0, 2]                # cam maximum corner -> warm
    assert tuple(heatmap(np.ones((8, 8)), image, alpha=1.0)[5, 5]) == (0, 0, 128)
