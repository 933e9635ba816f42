"""Bad images are refused by name (too small, empty, a mode or depth the readers do not handle)
and 16-bit images are scaled by their bit depth: in the readers, the data check, eval.py and
predict.py."""

from __future__ import annotations

import json
from pathlib import Path

import data_fixtures as fx
import numpy as np
import pytest
from PIL import Image

from hanet_jax.data import check, layouts
from hanet_jax.data.layouts import MIN_IMAGE_SIDE, DatasetError

# The refused cases: file name -> (writer, words its one error line must hold). A `tiny`
# image's mask is 1x1 too, so only the image is at fault.
BAD = {
    "tiny.png": (lambda p: _save(p, np.full((1, 1), 128, np.uint8)),
                 f"image is 1x1 pixels; the minimum side is {MIN_IMAGE_SIDE}"),
    "empty.png": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "float.tif": (lambda p: _save(p, fx.make_pair(7)[0].astype(np.float32) / 255),
                  "32-bit float image (mode F) is not read"),
    "wide.tif": (lambda p: _save(p, fx.make_pair(8)[0].astype(np.int32) * 65536),
                 "32-bit grey image (mode I) is not read"),
}


def _save(path: Path, array: np.ndarray) -> Path:
    """Writes `array` with PIL as it comes: uint16 gives a 16-bit grey PNG ("I;16"), float32
    and int32 give 32-bit TIFFs (modes "F" and "I")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _scaled(values: np.ndarray) -> np.ndarray:
    """16-bit values as 8-bit by the bit depth: round(v * 255 / 65535)."""
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _dark_16_bit(seed: int) -> np.ndarray:
    """A 16-bit image whose values stay within 0..199 (an 8-bit image stored as 16 bits): the
    trial's case, once read as 8-bit because of its maximum."""
    grey, _ = fx.make_pair(seed)
    return (grey.astype(np.uint16) * 199 // grey.max()).astype(np.uint16)


def _write_bad_split(root: Path, split: str, name: str) -> Path:
    """A 'processed' split with one good pair and the bad image `name` (with a mask that fits)."""
    images, masks = root / split / "images", root / split / "masks"
    grey, mask = fx.make_pair(1)
    _save(images / "good.png", grey)
    _save(masks / "good.png", mask.astype(np.uint8) * 255)
    writer, _ = BAD[name]
    bad = images / name
    bad.parent.mkdir(parents=True, exist_ok=True)
    writer(bad)
    stem = Path(name).stem
    side = (1, 1) if stem == "tiny" else (fx.HEIGHT, fx.WIDTH)
    _save(masks / f"{stem}.png", np.zeros(side, np.uint8))
    return bad


# ----------------------------------------------------------------------------- the readers


@pytest.mark.parametrize("name", sorted(BAD))
def test_read_image_refuses_each_bad_case_by_name(tmp_path, name):
    writer, words = BAD[name]
    path = tmp_path / name
    writer(path)
    with pytest.raises(DatasetError) as info:
        layouts.read_image(str(path))
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_the_minimum_side_holds_on_either_side(tmp_path):
    side = MIN_IMAGE_SIDE
    ok = _save(tmp_path / "ok.png", np.zeros((side, side), np.uint8))
    assert layouts.read_image(str(ok)).shape == (side, side, 3)
    for height, width in ((side - 1, 2 * side), (2 * side, side - 1)):
        path = _save(tmp_path / f"{height}x{width}.png", np.zeros((height, width), np.uint8))
        with pytest.raises(DatasetError, match=rf"{width}x{height} pixels; the minimum side is {side}$"):
            layouts.read_image(str(path))


def test_an_empty_mask_file_is_named(tmp_path):
    (tmp_path / "m.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"m\.png: empty file \(0 bytes\)"):
        layouts.read_mask(str(tmp_path / "m.png"))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_grey_is_scaled_by_its_bit_depth_not_its_values(tmp_path, ext):
    dark = _dark_16_bit(2)
    assert dark.max() == 199
    path = _save(tmp_path / f"dark{ext}", dark)
    with Image.open(path) as image:
        assert image.mode in layouts.SIXTEEN_BIT_MODES and layouts.sample_bits(image, str(path)) == 16
    image = layouts.read_image(str(path))
    np.testing.assert_array_equal(image[..., 0], _scaled(dark))
    assert image.max() == 1 and set(np.unique(image)) == {0, 1}  # 199 * 255 / 65535 = 0.77
    full = layouts.read_image(str(_save(tmp_path / f"full{ext}", np.full((40, 40), 65535, np.uint16))))
    assert (full == 255).all()
    mid = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)  # every 16th value
    np.testing.assert_array_equal(layouts.read_image(str(_save(tmp_path / f"mid{ext}", mid)))[..., 1],
                                  _scaled(mid))


def test_bit_depth_comes_from_the_file_header(tmp_path):
    """The PNG IHDR byte (how a 16-bit PNG opened as mode "I" is resolved) and the TIFF tag."""
    grey, mask = fx.make_pair(3)
    png8 = _save(tmp_path / "8.png", grey)
    png16 = _save(tmp_path / "16.png", grey.astype(np.uint16) * 257)
    png1 = _save(tmp_path / "1.png", mask)
    assert [layouts._png_bit_depth(str(p)) for p in (png1, png8, png16)] == [1, 8, 16]
    wide = _save(tmp_path / "32.tif", grey.astype(np.int32))
    with Image.open(wide) as image:
        assert image.mode == "I" and layouts.sample_bits(image, str(wide)) == 32
    with Image.open(png8) as image:
        assert layouts.sample_bits(image, str(png8)) is None  # not a 16/32-bit integer mode


# ----------------------------------------------------------------------------- the data check


def test_the_data_check_lists_each_case(tmp_path, capsys):
    root = tmp_path / "data"
    for name in BAD:
        _write_bad_split(root, "train", name)
    images, masks = root / "train" / "images", root / "train" / "masks"
    grey, mask = fx.make_pair(4)
    _save(images / "full16.png", grey.astype(np.uint16) * 257)    # 16-bit, full range: fine
    _save(masks / "full16.png", mask.astype(np.uint8))
    _save(images / "dark16.png", _dark_16_bit(5))                  # 16-bit, 8-bit values: warned
    _save(masks / "dark16.png", mask.astype(np.uint8))
    _save(images / "nomask.png", grey)                             # its mask file is empty
    (masks / "nomask.png").write_bytes(b"")

    report = check.validate(str(root), "processed", "train")
    errors = {Path(p.path).relative_to(root / "train").as_posix(): p.message for p in report.errors}
    expected = {f"images/{name}": words for name, (_, words) in BAD.items()}
    expected["masks/nomask.png"] = "empty file (0 bytes)"
    assert set(errors) == set(expected)
    for where, words in expected.items():
        assert words in errors[where], (where, errors[where])
    warnings = {Path(p.path).name: p.message for p in report.warnings}
    assert set(warnings) == {"dark16.png"}
    assert "within 0..199 of 65535" in warnings["dark16.png"] and "reads as 0..1 of 255" in warnings["dark16.png"]

    assert check.main([str(root), "--layout", "processed", "--split", "train"]) == 1
    out = capsys.readouterr().out
    for name, (_, words) in BAD.items():
        assert f"ERROR: {images / name}: {words}" in out
    assert f"WARNING: {images / 'dark16.png'}: 16-bit image" in out
    assert "full16.png" not in out
    with pytest.raises(DatasetError) as info:
        check.require_valid(str(root), "processed", "train")
    assert all(str(images / name) in str(info.value) for name in BAD)


# ----------------------------------------------------------------------------- eval.py and predict.py


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A ported-style checkpoint of a random HA-Net at 64x64 (as in test_eval.py)."""
    from hanet_jax.checkpoints.format import save_variables
    from hanet_jax.models.architectures import model_config
    from model_fixtures import SIZE, tiny_model

    model, variables = tiny_model()
    return save_variables(tmp_path_factory.mktemp("ckpt") / "tiny", variables,
                          model_cfg=model_config(model), image_size=SIZE)


def _lines_naming(text: str, path: Path) -> list[str]:
    return [line for line in text.splitlines() if str(path) in line]


@pytest.mark.parametrize("name", sorted(BAD))
def test_eval_refuses_a_split_holding_a_bad_image(tmp_path, tiny_checkpoint, capsys, name):
    from hanet_jax.eval import cli

    root = tmp_path / "data"
    bad = _write_bad_split(root, "test", name)
    out = tmp_path / "r.json"
    rc = cli.main(["--checkpoint", str(tiny_checkpoint), "--data_dir", str(root), "--layout",
                   "processed", "--split", "test", "--out", str(out), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    named = _lines_naming(err, bad)
    assert len(named) == 1 and BAD[name][1] in named[0], err
    assert "Traceback" not in err and not out.exists()


def test_eval_scores_a_16_bit_image_as_scaled_by_its_bit_depth(tmp_path, tiny_checkpoint, capsys):
    """Each 16-bit image scores exactly as its 8-bit scaled twin (the dark one near black)."""
    from hanet_jax.eval import cli
    from hanet_jax.eval.metrics import read_per_image_csv

    root = tmp_path / "data"
    twins = {"dark": _dark_16_bit(6), "full": fx.make_pair(6)[0].astype(np.uint16) * 257}
    _, mask = fx.make_pair(6)
    for stem, values in twins.items():
        _save(root / "test" / "images" / f"{stem}16.png", values)
        _save(root / "test" / "images" / f"{stem}8.png", _scaled(values))
        for suffix in ("16", "8"):
            _save(root / "test" / "masks" / f"{stem}{suffix}.png", mask.astype(np.uint8) * 255)
    out, rows_csv = tmp_path / "r.json", tmp_path / "rows.csv"
    rc = cli.main(["--checkpoint", str(tiny_checkpoint), "--data_dir", str(root), "--layout",
                   "processed", "--split", "test", "--out", str(out), "--per_image", str(rows_csv),
                   "--bootstrap", "0", "--batch_size", "1"])  # one image per pass: twins alike
    assert rc == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["n_images"] == 4
    rows = {row["stem"]: {k: v for k, v in row.items() if k != "stem"}
            for row in read_per_image_csv(rows_csv)}
    for stem in twins:
        assert rows[f"{stem}16"] == rows[f"{stem}8"]


def test_predict_skips_bad_images_by_name_and_scales_16_bit(tmp_path, tiny_checkpoint, capsys):
    from hanet_jax.inference import cli

    src, dst = tmp_path / "in", tmp_path / "out"
    grey, _ = fx.make_pair(9)
    _save(src / "good.png", grey)
    twins = {"dark": _dark_16_bit(10), "full": fx.make_pair(10)[0].astype(np.uint16) * 257}
    for stem, values in twins.items():
        _save(src / f"{stem}16.png", values)
        _save(src / f"{stem}8.png", _scaled(values))
    for name, (writer, _) in BAD.items():
        writer(src / name)
    rc = cli.main(["--checkpoint", str(tiny_checkpoint), "--input", str(src), "--output", str(dst),
                   "--probabilities", "--batch_size", "1"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    written = {"good", "dark16", "dark8", "full16", "full8"}
    assert sorted(p.name for p in dst.glob("*.png")) == sorted(f"{s}.png" for s in written)
    assert Image.open(dst / "good.png").size == (fx.WIDTH, fx.HEIGHT)
    for name, (_, words) in BAD.items():
        named = _lines_naming(captured.err, src / name)
        assert len(named) == 1 and named[0].startswith("skipped") and words in named[0], captured.err
    assert f"wrote {len(written)} mask(s)" in captured.out and f"{len(BAD)} file(s) failed" in captured.out
    for stem in twins:
        np.testing.assert_array_equal(np.load(dst / f"{stem}16.npy"), np.load(dst / f"{stem}8.npy"))
