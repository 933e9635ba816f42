"""Writers of tiny dataset folders (all three layouts) for the data tests.

Each example is a grey image whose lesion is exactly the pixels brighter than ``LESION_LEVEL``,
so tests can recompute the mask from the image after any geometric transform.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 40, 48
LESION_LEVEL = 150  # lesion pixels are >= 200, background <= 100


def make_pair(seed: int, height: int = HEIGHT, width: int = WIDTH
              ) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 grey image (H, W) with a bright elliptical lesion, and its bool mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    image = np.where(mask, rng.integers(200, 256, mask.shape), rng.integers(0, 101, mask.shape))
    return image.astype(np.uint8), mask


def save_image(path: str, grey: np.ndarray, mode: str = "L") -> str:
    """Saves a grey uint8 image as mode "L", "RGB", "RGBA" or "I;16" (16-bit PNG)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "L":
        image = Image.fromarray(grey)
    elif mode == "RGB":
        image = Image.fromarray(np.stack([grey] * 3, -1))
    elif mode == "RGBA":
        alpha = np.full_like(grey, 128)  # must be dropped, not blended
        image = Image.fromarray(np.stack([grey] * 3 + [alpha], -1))
    elif mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
    else:
        raise ValueError(mode)
    image.save(path)
    return path


def save_mask(path: str, mask: np.ndarray, style: str = "0255") -> str:
    """Saves a bool mask as "bool" (1-bit), "01", "0255", "rgb" (red), "rgba" or "gray"
    (non-binary)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    on = mask.astype(np.uint8)
    if style == "bool":
        image = Image.fromarray(mask)  # mode "1"; a .tif path gives a 1-bit TIFF like the release
    elif style == "01":
        image = Image.fromarray(on)
    elif style == "0255":
        image = Image.fromarray(on * 255)
    elif style == "rgb":
        image = Image.fromarray(np.stack([on * 255, 0 * on, 0 * on], -1))
    elif style == "rgba":
        image = Image.fromarray(np.stack([on * 255] * 3 + [np.full_like(on, 255)], -1))
    elif style == "gray":  # anti-aliased edges: values between 0 and 255
        stripes = (np.arange(on.size).reshape(on.shape) % 2).astype(np.uint8)
        image = Image.fromarray(on * 255 - on * 127 * stripes)
    else:
        raise ValueError(style)
    if path.endswith((".tif", ".tiff")) and style == "bool":
        image.save(path, compression="group4")
    else:
        image.save(path)
    return path


def truncate(path: str, keep: float = 0.5) -> str:
    """Cuts a file to a fraction of its size (a corrupt/truncated download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    return path


def write_processed(root: str, split: str = "train", n: int = 4, *, image_ext: str = ".png",
                    mask_ext: str = ".png", image_mode: str = "L", mask_style: str = "0255",
                    masks_under_images: bool = False, first_seed: int = 0) -> dict:
    """``root/split/images/{1..n}`` + ``masks`` (or ``images/masks``).

    Returns stem -> (grey image, mask).
    """
    image_dir = os.path.join(root, split, "images")
    mask_dir = os.path.join(image_dir, "masks") if masks_under_images else os.path.join(
        root, split, "masks")
    pairs = {}
    for i in range(1, n + 1):
        image, mask = make_pair(first_seed + i)
        save_image(os.path.join(image_dir, f"{i}{image_ext}"), image, image_mode)
        save_mask(os.path.join(mask_dir, f"{i}{mask_ext}"), mask, mask_style)
        pairs[str(i)] = (image, mask)
    return pairs


def write_busi(root: str, counts: dict[str, int] | None = None) -> dict:
    """Kaggle BUSI layout. Image 2 of each lesion class gets two extra masks (_mask_1, _mask_2)
    holding other lesion parts; returns stem -> (image, merged mask, label)."""
    counts = counts or {"benign": 3, "malignant": 2, "normal": 1}
    out = {}
    for c, (cls, count) in enumerate(counts.items()):
        for i in range(1, count + 1):
            stem = f"{cls} ({i})"
            image, mask = make_pair(100 * c + i)
            save_image(os.path.join(root, cls, f"{stem}.png"), image, "RGB")
            if cls == "normal":
                mask = np.zeros_like(mask)
            if i == 2 and cls != "normal":
                parts = [mask.copy() for _ in range(3)]
                parts[0][:, WIDTH // 2:] = False
                parts[1][:, :WIDTH // 2] = False
                parts[2][:] = False
                parts[2][:3, :3] = True
                mask = parts[0] | parts[1] | parts[2]
                for suffix, part in zip(("_mask", "_mask_1", "_mask_2"), parts):
                    save_mask(os.path.join(root, cls, f"{stem}{suffix}.png"), part, "rgba")
            else:
                save_mask(os.path.join(root, cls, f"{stem}_mask.png"), mask, "0255")
            out[stem] = (image, mask, cls)
    return out


def write_udiat(root: str, n: int = 3) -> dict:
    """UDIAT layout: ``original/00000N.png`` + ``GT/00000N.png``; returns stem -> (image, mask)."""
    out = {}
    for i in range(1, n + 1):
        stem = f"{i:06d}"
        image, mask = make_pair(500 + i)
        save_image(os.path.join(root, "original", f"{stem}.png"), image, "L")
        save_mask(os.path.join(root, "GT", f"{stem}.png"), mask, "0255")
        out[stem] = (image, mask)
    return out
