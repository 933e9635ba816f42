"""Post-processing of the fixed protocol's masks (one component: the largest or the most probable),
chosen on validation only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanet_jax.eval import evaluate as eval_lib
from hanet_jax.inference import postprocess
from hanet_jax.eval.protocols import evaluate_image

from hanet_jax.data.layouts import list_examples
from test_eval import FakeModel, _write_split, fake_predictor  # noqa: F401  (fixture)

# Every image written >= layouts.MIN_IMAGE_SIDE (32): the cases written to disk are drawn at
# 6x8 and 8x8 and written at 36x48 and 48x48, each drawn pixel a SCALE x SCALE block
# (nearest neighbour). That keeps every component (8-connectivity, diagonal-only contacts
# included), Dice and threshold decision; pixel counts and probability masses scale by SCALE**2.
SCALE = 6


def _scaled(cases):
    """(stem, id, gt, prob) cases drawn by hand, with gt and prob upscaled SCALE times."""
    up = lambda a: np.repeat(np.repeat(a, SCALE, axis=0), SCALE, axis=1)
    return [(stem, ident, up(gt), up(prob)) for stem, ident, gt, prob in cases]


def test_largest_component_keeps_the_biggest_eight_connected_blob():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True     # 3 pixels, joined only diagonally
    mask[4:6, 4:6] = True                            # 4 pixels
    mask[0, 5] = True                                # 1 pixel
    kept = postprocess.largest_component(mask)
    assert kept.sum() == 4 and kept[4:6, 4:6].all()
    mask[3, 3] = True                                # joins the diagonal to the block: 8 pixels
    assert postprocess.largest_component(mask).sum() == 8
    empty = np.zeros((3, 3), bool)
    assert not postprocess.largest_component(empty).any()
    assert np.array_equal(postprocess.apply(mask, "none"), mask)
    with pytest.raises(ValueError, match="unknown post-processing 'biggest'"):
        postprocess.apply(mask, "biggest")


def _faint_region_beside_a_confident_lesion():
    """A 4-pixel lesion at 0.95 and a 6-pixel false region at 0.55, apart: size picks the false
    region, probability mass (3.8 against 3.3) the lesion."""
    gt = np.zeros((6, 8), bool)
    gt[0:2, 0:2] = True
    prob = np.where(gt, 0.95, 0.05).astype(np.float32)
    prob[4:6, 5:8] = 0.55
    return gt, prob


def test_most_probable_component_keeps_the_component_with_most_probability_mass():
    gt, prob = _faint_region_beside_a_confident_lesion()
    mask = prob >= 0.5
    assert np.array_equal(postprocess.most_probable_component(mask, prob), gt)
    assert np.array_equal(postprocess.apply(mask, "most_probable_component", prob), gt)
    assert postprocess.largest_component(mask)[4:6, 5:8].all() and not postprocess.largest_component(mask)[gt].any()
    assert not postprocess.most_probable_component(np.zeros_like(mask), prob).any()
    with pytest.raises(ValueError, match="needs the probabilities"):
        postprocess.apply(mask, "most_probable_component")
    with pytest.raises(ValueError, match="differ in shape"):
        postprocess.most_probable_component(mask, prob[:3])
    assert evaluate_image(prob, gt, "fixed", 0.5, "most_probable_component")["dice"] == 1.0
    # A trailing channel axis (H, W, 1) is handled and kept.
    kept = postprocess.apply(mask[..., None], "most_probable_component", prob[..., None])
    assert kept.shape == mask[..., None].shape and np.array_equal(kept[..., 0], gt)
    assert postprocess.largest_component(mask[..., None]).shape == mask[..., None].shape
    assert evaluate_image(prob, gt, "fixed", 0.5, "largest_component")["dice"] == 0.0


def test_select_threshold_can_choose_the_most_probable_component(tmp_path):
    gt = np.zeros((6, 8), bool)
    gt[0:2, 0:2] = True
    # One image: a 6-pixel false region (one pixel at 0.99, five at 0.52; mass 3.59) beside a
    # 4-pixel lesion at 0.95 (mass 3.8). The other: a faint lesion at 0.52 alone. Only thresholds
    # <= 0.52 find the faint lesion, and there only probability mass isolates the first one.
    # (Drawn pixels and masses; written SCALE times larger, both are SCALE**2 times these.)
    spotted = np.where(gt, 0.95, 0.05).astype(np.float32)
    spotted[4:6, 5:8] = 0.52
    spotted[4, 5] = 0.99
    faint = np.where(gt, 0.52, 0.05).astype(np.float32)
    cases = _scaled([("spotted", 1, gt, spotted), ("faint", 2, gt, faint)])
    _write_split(tmp_path, "val", cases)
    choice = eval_lib.select_threshold(FakeModel(cases), list_examples(str(tmp_path), "processed", "val"),
                                       postprocess=postprocess.POSTPROCESS)
    assert (choice.postprocess, choice.threshold) == ("most_probable_component", 0.5)
    assert max(choice.mean_dice) == 1.0
    assert max(choice.mean_dice_by_postprocess["largest_component"]) == 0.5
    assert max(choice.mean_dice_by_postprocess["none"]) < 1.0


def test_fixed_protocol_post_processes_and_the_oracle_does_not():
    gt = np.zeros((5, 5), bool)
    gt[:2, :2] = True
    prob = np.where(gt, 0.9, 0.1).astype(np.float32)
    prob[4, 4] = 0.8                                  # a one-pixel false positive far away
    plain = evaluate_image(prob, gt, "fixed", 0.5)
    kept = evaluate_image(prob, gt, "fixed", 0.5, "largest_component")
    assert (plain["TP"], plain["FP"]) == (4, 1) and (kept["TP"], kept["FP"]) == (4, 0)
    assert kept["dice"] == 1.0 and plain["dice"] == pytest.approx(8 / 9)
    oracle = evaluate_image(prob, gt, "paper_oracle", 0.5, "largest_component")
    assert oracle == evaluate_image(prob, gt, "paper_oracle")


def _speckled(gt, seed):
    """A lesion plus isolated false-positive pixels away from it, more confident than the lesion
    (so that no threshold removes them)."""
    prob = np.where(gt, 0.9, 0.1).astype(np.float32)
    prob[7, 7 - seed] = prob[5, 0] = 0.95
    return prob


def test_select_threshold_chooses_post_processing_on_validation_with_ties_to_none(tmp_path):
    gt = np.zeros((8, 8), bool)
    gt[1:4, 1:4] = True
    speckled = _scaled([(f"s{i}", i + 1, gt, _speckled(gt, i)) for i in range(3)])
    clean = _scaled([(f"c{i}", i + 4, gt, np.where(gt, 0.9, 0.1).astype(np.float32)) for i in range(3)])
    _write_split(tmp_path, "speckled", speckled)
    _write_split(tmp_path, "clean", clean)
    both = ("none", "largest_component")
    choice = eval_lib.select_threshold(FakeModel(speckled), list_examples(str(tmp_path), "processed", "speckled"),
                                       postprocess=both)
    assert choice.postprocess == "largest_component" and choice.threshold == 0.5
    assert max(choice.mean_dice_by_postprocess["largest_component"]) == 1.0
    assert max(choice.mean_dice_by_postprocess["none"]) < 1.0
    assert choice.mean_dice == choice.mean_dice_by_postprocess["largest_component"]
    # Without the speckles both score the same: the tie goes to "none".
    choice = eval_lib.select_threshold(FakeModel(clean), list_examples(str(tmp_path), "processed", "clean"),
                                       postprocess=both)
    assert choice.postprocess == "none" and choice.threshold == 0.5


def test_run_with_postprocess_auto_records_the_choice_made_on_val(tmp_path, fake_predictor):
    fake_load, _ = fake_predictor
    gt = np.zeros((8, 8), bool)
    gt[1:4, 1:4] = True
    val_cases = _scaled([("v1", 1, gt, _speckled(gt, 0)), ("v2", 2, gt, _speckled(gt, 1))])
    test_cases = _scaled([("t1", 3, gt, _speckled(gt, 2))])
    fake_load.cases = val_cases + test_cases
    root = tmp_path / "data"
    _write_split(root, "val", val_cases)
    _write_split(root, "test", test_cases)
    base = dict(checkpoint=str(tmp_path / "ckpt"), data_dir=str(root), layout="processed", split="test",
                out=str(tmp_path / "r.json"), bootstrap=0)
    fixed = eval_lib.run(eval_lib.EvalConfig(**base, threshold_from_split="val", postprocess="auto"),
                         log=lambda s: None)["protocols"]["fixed"]
    on_disk = json.loads((tmp_path / "r.json").read_text())["protocols"]["fixed"]
    assert fixed["postprocess"] == on_disk["postprocess"] == "largest_component"
    assert on_disk["postprocess_source"] == "val" and on_disk["mean"]["dice"] == 1.0
    # Both single-component options score 1.0 here: the tie goes to the earlier one.
    by_post = on_disk["threshold_selection"]["mean_dice_by_postprocess"]
    assert set(by_post) == set(postprocess.POSTPROCESS)
    assert max(by_post["most_probable_component"]) == max(by_post["largest_component"]) == 1.0
    plain = eval_lib.run(eval_lib.EvalConfig(**base), log=lambda s: None)["protocols"]["fixed"]
    assert plain["postprocess"] == "none" and plain["postprocess_source"] == "argument"
    assert plain["mean"]["dice"] < 1.0
    with pytest.raises(eval_lib.EvalError, match="--postprocess auto .* --threshold_from_split"):
        eval_lib.run(eval_lib.EvalConfig(**base, postprocess="auto"), log=lambda s: None)
    with pytest.raises(eval_lib.EvalError, match="--postprocess must be one of"):
        eval_lib.run(eval_lib.EvalConfig(**base, postprocess="largest"), log=lambda s: None)
