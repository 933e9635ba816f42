"""Pictures of predictions (PIL + NumPy only): error overlays, a best/median/worst (or worst-first)
grid, heatmaps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hanet_jax import storage
from hanet_jax.eval.metrics import as_bool_mask

TP_COLOR = (0, 255, 0)    # green: tumour found
FP_COLOR = (255, 0, 0)    # red: predicted, not tumour
FN_COLOR = (0, 0, 255)    # blue: tumour missed


def to_rgb(image) -> np.ndarray:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")


def _blend(base: np.ndarray, color, where: np.ndarray, alpha: float) -> np.ndarray:
    """base where ~where; round((1 - alpha)·base + alpha·color) where `where`."""
    color = np.broadcast_to(np.asarray(color, dtype=np.float64), base.shape)
    mixed = np.rint((1.0 - alpha) * base + alpha * color).astype(np.uint8)
    return np.where(where[..., None], mixed, base)


def overlay(image_uint8, pred_bool, gt_bool, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB image with TP green, FP red, FN blue blended in at `alpha`; TN left as is."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb(image_uint8)
    pred = as_bool_mask(np.squeeze(pred_bool), "pred")
    gt = as_bool_mask(np.squeeze(gt_bool), "gt")
    if pred.shape != rgb.shape[:2] or gt.shape != rgb.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]}, pred {pred.shape} and gt {gt.shape} must match")
    color = np.zeros_like(rgb)
    color[pred & gt] = TP_COLOR
    color[pred & ~gt] = FP_COLOR
    color[~pred & gt] = FN_COLOR
    return _blend(rgb, color, pred | gt, alpha)


def save_overlay(path, image_uint8, pred_bool, gt_bool, alpha: float = 0.5) -> None:
    storage.write_png(path, overlay(image_uint8, pred_bool, gt_bool, alpha))


def select_cases(dice_by_stem: Mapping[str, float]) -> list[tuple[str, str]]:
    """[("best", stem), ("median", stem), ("worst", stem)] by Dice; NaN Dice is skipped.

    Sorted by (Dice, stem) so ties resolve the same way every run; with an even count the
    median is the lower middle image (a real case, not an average of two).
    """
    ranked = sorted((d, s) for s, d in dice_by_stem.items() if not math.isnan(d))
    if not ranked:
        raise ValueError("no image with a defined Dice")
    return [("best", ranked[-1][1]), ("median", ranked[(len(ranked) - 1) // 2][1]),
            ("worst", ranked[0][1])]


def worst_cases(dice_by_stem: Mapping[str, float], count: int) -> list[tuple[str, str]]:
    """[("worst 1", stem), ("worst 2", stem), ...]: the `count` lowest-Dice images, worst first,
    so the lesions a model missed are the first rows a reader sees. NaN Dice is skipped (an empty
    mask with an empty prediction is no error); ties go by stem, as in `select_cases`."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    ranked = sorted((d, s) for s, d in dice_by_stem.items() if not math.isnan(d))
    if not ranked:
        raise ValueError("no image with a defined Dice")
    return [(f"worst {k}", s) for k, (_, s) in enumerate(ranked[:count], start=1)]


def _mask_rgb(mask) -> np.ndarray:
    return to_rgb(as_bool_mask(np.squeeze(mask)).astype(np.uint8) * 255)


def case_grid(entries: Sequence[Mapping], path, alpha: float = 0.5) -> None:
    """One PNG: a row per entry, columns image | ground truth | prediction | overlay.

    Each entry maps "stem", "image" (uint8), "gt", "pred" (binary masks of the image's size),
    "dice" (float) and optionally "label" (e.g. "best", from `select_cases`). Rows are
    labelled "label | stem | Dice 0.912" above the tiles, in PIL's default font.
    """
    if not entries:
        raise ValueError("case_grid needs at least one entry")
    font = ImageFont.load_default()
    headers = ("image", "ground truth", "prediction", "overlay")
    rows = []
    for e in entries:
        tiles = [to_rgb(e["image"]), _mask_rgb(e["gt"]), _mask_rgb(e["pred"]),
                 overlay(e["image"], e["pred"], e["gt"], alpha)]
        label = " | ".join(x for x in (e.get("label", ""), str(e["stem"]), f"Dice {e['dice']:.3f}") if x)
        rows.append((label, tiles))
    h, w = rows[0][1][0].shape[:2]
    if any(t.shape[:2] != (h, w) for _, tiles in rows for t in tiles):
        raise ValueError("every image and mask in case_grid must have the same size")
    gap, text_h = 4, 18
    width = len(headers) * w + (len(headers) + 1) * gap
    height = text_h + len(rows) * (text_h + h + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(headers):
        draw.text((gap + j * (w + gap), 2), name, fill=(0, 0, 0), font=font)
    for i, (label, tiles) in enumerate(rows):
        top = text_h + i * (text_h + h + gap)
        draw.text((gap, top + 2), label, fill=(0, 0, 0), font=font)
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (gap + j * (w + gap), top + text_h))
    storage.write_png(path, canvas)


def jet(x) -> np.ndarray:
    """Jet-like colormap: values in [0, 1] -> uint8 RGB, dark blue -> cyan -> yellow -> dark red."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where R, G and B peak
    rgb = np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)
    return np.rint(255 * rgb).astype(np.uint8)


def heatmap(cam, image, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: `cam` min-max scaled to [0, 1], resized (bilinear) to the image, jet-coloured
    and blended over it as (1 - alpha)·image + alpha·colour. A constant cam maps to 0 (blue)."""
    rgb = to_rgb(image)
    cam = np.asarray(np.squeeze(cam), dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be 2-D after squeezing, got {cam.shape}")
    if cam.shape != rgb.shape[:2]:
        cam = np.asarray(Image.fromarray(cam).resize(rgb.shape[1::-1], Image.BILINEAR))
    lo, hi = float(cam.min()), float(cam.max())
    scaled = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    return _blend(rgb, jet(scaled), np.ones(rgb.shape[:2], dtype=bool), alpha)
