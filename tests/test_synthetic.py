"""Synthetic phantoms: determinism, exact masks, ultrasound-like statistics, file round trip."""

import numpy as np
import pytest
from scipy import ndimage

from hanet_jax.data import layouts, synthetic


def test_same_seed_same_bytes_and_index_stable():
    images, masks = synthetic.make_phantoms(6, size=48, seed=3)
    again, again_masks = synthetic.make_phantoms(6, size=48, seed=3)
    assert images.tobytes() == again.tobytes() and masks.tobytes() == again_masks.tobytes()
    # Phantom i does not depend on how many are made, so any subset can be regenerated.
    fewer, fewer_masks = synthetic.make_phantoms(3, size=48, seed=3)
    np.testing.assert_array_equal(fewer, images[:3])
    np.testing.assert_array_equal(fewer_masks, masks[:3])
    one, one_mask, _ = synthetic.phantom(4, size=48, seed=3)
    np.testing.assert_array_equal(one, images[4])
    np.testing.assert_array_equal(one_mask, masks[4])
    other, _ = synthetic.make_phantoms(6, size=48, seed=4)
    assert not any(np.array_equal(a, b) for a in images for b in other)


def test_shapes_dtypes_and_grey_in_three_channels():
    images, masks = synthetic.make_phantoms(3, size=(40, 56), seed=0)
    assert images.shape == (3, 40, 56, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 40, 56) and masks.dtype == bool
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert images.std() > 10  # not a flat image
    with pytest.raises(ValueError, match="at least 8x8"):
        synthetic.make_phantoms(1, size=4)


def test_splits_use_their_own_streams():
    train, _ = synthetic.make_split("train", 4, 32, seed=0)
    val, _ = synthetic.make_split("val", 4, 32, seed=0)
    again, _ = synthetic.make_split("train", 2, 32, seed=0)
    np.testing.assert_array_equal(again, train[:2])
    assert not any(np.array_equal(a, b) for a in train for b in val)
    with pytest.raises(ValueError, match="unknown split"):
        synthetic.make_split("dev", 1, 32)


def test_lesion_count_option():
    _, masks = synthetic.make_phantoms(12, size=48, seed=0)
    assert all(m.any() for m in masks)  # one lesion by default
    _, none = synthetic.make_phantoms(3, size=48, seed=0, lesion_probs=(1.0,))
    assert not none.any()
    infos = [synthetic.phantom(i, size=48, lesion_probs=(0.2, 0.5, 0.3))[2] for i in range(30)]
    assert {info["lesions"] for info in infos} == {0, 1, 2}


def _edge_contrast(mask, grey):
    """Mean grey just outside the mask's boundary minus just inside it."""
    inner = mask & ~ndimage.binary_erosion(mask)
    outer = ndimage.binary_dilation(mask) & ~mask
    return grey[outer].mean() - grey[inner].mean()


def test_mask_is_exactly_the_dark_lesion():
    images, masks = synthetic.make_phantoms(16, size=64, seed=0, p_blur=0.0)
    grey = images[..., 0].astype(np.float64)
    for g, m in zip(grey, masks):
        assert m.any()
        assert g[m].mean() < 0.6 * g[~m].mean()  # hypoechoic
    # The image's edge lies on the mask's boundary: moving the mask by one pixel either way
    # loses most of the step in brightness across it.
    exact = np.mean([_edge_contrast(m, g) for g, m in zip(grey, masks)])
    assert exact > 30
    for shift in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        moved = np.mean([_edge_contrast(np.roll(m, shift, (0, 1)), g) for g, m in zip(grey, masks)])
        assert moved < 0.6 * exact, shift


def _below_vs_beside(kind, n=12):
    """Mean grey in the band under each lesion minus the same depths away from it."""
    images, masks = synthetic.make_phantoms(
        n, size=64, seed=1, p_shadow=float(kind == "shadow"),
        p_enhancement=float(kind == "enhancement"),
    )
    diffs = []
    for image, mask in zip(images, masks):
        grey = image[..., 0].astype(np.float64)
        rows, cols = np.nonzero(mask)
        band = slice(rows.max() + 2, min(64, rows.max() + 14))
        under = np.zeros(64, bool)
        under[cols.min() : cols.max() + 1] = True
        beside = ~ndimage.binary_dilation(under, iterations=6)
        if beside.any() and band.start < band.stop:
            diffs.append(grey[band][:, under].mean() - grey[band][:, beside].mean())
    return np.mean(diffs)


def test_posterior_shadow_and_enhancement():
    assert _below_vs_beside("shadow") < -15
    assert _below_vs_beside("enhancement") > 10
    infos = [synthetic.phantom(i, size=32)[2]["posterior"] for i in range(40)]
    assert {"shadow", "enhancement", "none"} <= set(infos)


def test_darker_with_depth_on_average():
    images, masks = synthetic.make_phantoms(16, size=64, seed=2, lesion_probs=(1.0,))
    profile = images[..., 0].mean(axis=(0, 2))
    assert profile[48:].mean() < profile[8:24].mean()


def test_write_processed_layout_round_trip(tmp_path):
    images, masks = synthetic.make_phantoms(3, size=32, seed=0)
    split_dir = synthetic.write_processed_layout(tmp_path, "train", images, masks)
    assert split_dir == tmp_path / "train"
    examples = layouts.list_examples(tmp_path, "processed", "train")
    assert [e.stem for e in examples] == ["1", "2", "3"]
    for e, image, mask in zip(examples, images, masks):
        np.testing.assert_array_equal(layouts.read_image(e.image_path), image)
        np.testing.assert_array_equal(layouts.read_mask(e.mask_paths), mask)
    synthetic.write_processed_layout(tmp_path, "test", images, masks, stems=["a", "b", "c"],
                                     image_ext=".jpg")
    assert sorted(p.name for p in (tmp_path / "test" / "images").iterdir()) == [
        "a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ValueError, match="3 images but 2 masks"):
        synthetic.write_processed_layout(tmp_path, "x", images, masks[:2])


def test_cli_writes_the_held_out_split(tmp_path):
    from hanet_jax.data.layouts import list_examples, read_image, read_mask

    assert synthetic.main(["--out", str(tmp_path), "--split", "test", "--n", "3", "--size", "32", "--seed", "7"]) == 0
    images, masks = synthetic.make_split("test", 3, 32, 7)
    examples = list_examples(tmp_path, "processed", "test")
    assert [e.stem for e in examples] == ["1", "2", "3"]
    for e, image, mask in zip(examples, images, masks):
        np.testing.assert_array_equal(read_image(e.image_path), image)
        np.testing.assert_array_equal(read_mask(e.mask_paths), mask)
