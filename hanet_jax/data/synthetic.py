"""Synthetic breast-ultrasound phantoms with exact lesion masks.

Each phantom is a B-mode-like image of layered breast tissue (skin line, subcutaneous fat,
fibroglandular tissue, chest wall) with a hypoechoic lesion of irregular, lobulated shape
(one by default; none or several as an option); the mask is exactly the lesion. What a
segmentation model has to cope with is there: multiplicative Rayleigh speckle, darker-with-
depth attenuation partly undone by a time-gain curve, log compression, a posterior acoustic
shadow or enhancement below the lesion, and sometimes a blurred lesion boundary.

Phantom `i` of seed `s` depends only on (s, stream, i), never on how many are made, so any
subset can be regenerated. Everything runs on numpy/scipy (about 3 ms per 128x128 image).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image
from scipy import ndimage

from hanet_jax import command_line

# make_split's streams: the same seed gives independent phantoms in each split.
SPLIT_STREAMS = {"train": 1, "val": 2, "test": 3}

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 8 or w < 8:
        raise ValueError(f"phantom size must be at least 8x8, got {size}")
    return int(h), int(w)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]):
    """Zero-mean, unit-std random field varying over about `cells` (rows, cols) cells."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    field = np.asarray(
        Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BICUBIC), np.float32
    )
    return (field - field.mean()) / (field.std() + 1e-6)


def _correlated_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Gaussian noise of `shape` (..., H, W), low-passed over (H, W) by an anisotropic
    Gaussian of std `sigma` (rows, cols) pixels and rescaled to unit std."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0,) * (len(shape) - 2) + tuple(sigma), truncate=3.0)
    return noise / (noise.std() + 1e-6)


def _wavy(rng: np.random.Generator, x: np.ndarray, depth: float, amplitude: float):
    """A tissue boundary: depth(x) as a few random sinusoids around `depth`."""
    out = np.full_like(x, depth)
    for k in range(1, 4):
        frequency, phase = k * rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        out += amplitude / k * np.sin(2 * np.pi * frequency * x + phase)
    return out


def _soft_step(t: np.ndarray) -> np.ndarray:
    """Logistic step from 0 to 1 around t = 0."""
    return 1 / (1 + np.exp(-t))


def _tissue_db(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, h: int, w: int):
    """Echogenicity in dB (before speckle) of layered breast tissue with fibrous texture."""
    skin = _wavy(rng, x, rng.uniform(0.03, 0.06), 0.005)
    fat = _wavy(rng, x, rng.uniform(0.15, 0.3), 0.03)
    gland = _wavy(rng, x, rng.uniform(0.55, 0.8), 0.05)
    skin_db, fat_db, gland_db, wall_db = rng.uniform([-2, -20, -8, -18], [0, -14, -3, -12])
    into_gland = _soft_step((y - fat) * h / 2)  # boundaries a few pixels wide
    into_wall = _soft_step((y - gland) * h / 3)
    db = fat_db + (gland_db - fat_db) * into_gland + (wall_db - gland_db) * into_wall
    db = db + (skin_db - db) * np.exp(-(((y - skin) * h / 2.0) ** 2))  # bright skin line
    # Fat lobules: dark islands; Cooper's ligaments and fibres: bright, laterally long streaks.
    lobules = np.clip(_smooth_field(rng, (h, w), (5, 8)) - 0.3, 0, 1)
    db = db - 8 * lobules * (y > skin) * (1 - into_wall)
    db = db + 4 * _correlated_noise(rng, (h, w), (0.01 * h, 0.05 * w))
    db = db + 3 * _smooth_field(rng, (h, w), (4, 6))
    return db.astype(np.float32)


def _lesion(rng: np.random.Generator, h: int, w: int, blur: float):
    """One irregular lesion as (rows, cols, inside): `inside` >= 0 exactly within the lesion,
    in units of its radius, over the box (rows, cols) that holds it plus the blur margin.

    A rotated ellipse whose radius is perturbed by a few Fourier harmonics (lobulation).
    """
    cy, cx = rng.uniform(0.3, 0.65) * h, rng.uniform(0.25, 0.75) * w
    rx = rng.uniform(0.08, 0.2) * h
    ry = rx * rng.uniform(0.5, 1.0)  # mostly wider than tall, as most breast masses are
    theta = rng.uniform(-0.4, 0.4)
    harmonics = rng.uniform(0.03, 0.15) * rng.standard_normal(7) / np.arange(2, 9) ** 0.8
    phases = np.exp(1j * rng.uniform(0, 2 * np.pi, 7))
    reach = (1 + np.abs(harmonics).sum() + blur) * rx + 1
    rows = slice(max(0, int(cy - reach)), min(h, int(np.ceil(cy + reach)) + 1))
    cols = slice(max(0, int(cx - reach)), min(w, int(np.ceil(cx + reach)) + 1))
    yy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + 0.5 - cy
    xx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] + 0.5 - cx
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / rx
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / ry
    rho = np.hypot(u, v)
    unit = (u + 1j * v) / np.maximum(rho, 1e-6)  # e^{i phi}
    radius, power = np.ones_like(rho), unit
    for k in range(7):  # sum of harmonics a_k cos((k + 2) phi + p_k), via powers of e^{i phi}
        power = power * unit
        radius += harmonics[k] * (power * phases[k]).real
    return rows, cols, np.maximum(radius, 0.4) - rho


def phantom(
    index: int,
    *,
    size: Size = 128,
    seed: int = 0,
    stream: int = 0,
    lesion_probs: Sequence[float] = (0.0, 1.0),
    p_shadow: float = 0.5,
    p_enhancement: float = 0.3,
    p_blur: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Phantom number `index`: (image uint8 (H, W, 3), mask bool (H, W), info dict).

    lesion_probs[k] is the probability of k lesions (default: always one). Below the lesions
    there is a shadow with probability p_shadow, else an enhancement with probability
    p_enhancement, else neither. With probability p_blur the lesion boundary is blurred in the
    image (never in the mask). info records what was drawn: lesions, posterior, blur.
    """
    h, w = _hw(size)
    rng = np.random.default_rng([seed, stream, index])
    y = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h  # (H, 1) depth, 0 at the probe
    x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / h  # (1, W), same units as depth
    db = _tissue_db(rng, y, x, h, w)

    probs = np.asarray(lesion_probs, np.float64)
    count = int(rng.choice(len(probs), p=probs / probs.sum()))
    kinds, p_none = ["shadow", "enhancement", "none"], 1 - p_shadow - p_enhancement
    posterior = str(rng.choice(kinds, p=[p_shadow, p_enhancement, p_none]))
    blur = rng.uniform(0.1, 0.3) if rng.uniform() < p_blur else 0.0
    mask = np.zeros((h, w), bool)
    alpha = np.zeros((h, w), np.float32)  # how much of each pixel is lesion, in the image
    for _ in range(count):
        rows, cols, inside = _lesion(rng, h, w, blur)
        mask[rows, cols] |= inside >= 0
        soft = np.clip(inside / blur + 0.5, 0, 1) if blur else (inside >= 0).astype(np.float32)
        alpha[rows, cols] = np.maximum(alpha[rows, cols], soft)
    if count:
        # Hypoechoic interior with faint internal echoes of its own.
        inner = rng.uniform(-32, -22) + 4 * _smooth_field(rng, (h, w), (8, 8))
        db = db + (inner - db) * alpha
        if posterior != "none":
            # Below the lesion, each column is darkened (or brightened) in proportion to how
            # much lesion lies above it, fading with distance below; soft at the sides.
            above = np.maximum.accumulate(alpha, axis=0)
            below = ndimage.gaussian_filter1d(above - alpha, sigma=0.03 * w, axis=1)
            distance = np.cumsum(above - alpha, axis=0) / h
            gain = rng.uniform(-14, -7) if posterior == "shadow" else rng.uniform(5, 9)
            db = db + gain * below * np.exp(-distance / rng.uniform(0.4, 1.2))

    # Speckle: magnitude of low-passed complex Gaussian noise (Rayleigh), its grain longer
    # laterally than axially as a linear probe's point-spread function is; two looks are
    # averaged in power, as spatial compounding does, which fills in the deepest nulls.
    grain = (rng.uniform(0.4, 0.7) * h / 128, rng.uniform(0.9, 1.6) * h / 128)
    power = np.square(_correlated_noise(rng, (4, h, w), grain)).mean(axis=0)  # 2 looks x (re, im)

    # Attenuation darkens with depth; the time-gain curve gives some of it back.
    attenuation = rng.uniform(15, 30)  # dB over the image depth
    tgc = attenuation * rng.uniform(0.3, 0.7)
    db = db + 10 * np.log10(power + 1e-6) + (tgc - attenuation) * y

    # Log compression into the display's dynamic range.
    dynamic_range = rng.uniform(45, 60)
    top = np.percentile(db, 99.8) + rng.uniform(0, 4)
    grey = np.clip((db - top) / dynamic_range + 1, 0, 1) ** rng.uniform(1.6, 2.2)
    image = np.rint(grey * 255).astype(np.uint8)
    info = {"lesions": count, "posterior": posterior if count else "none", "blur": float(blur)}
    return np.repeat(image[..., None], 3, axis=-1), mask, info


def make_phantoms(
    n: int, *, size: Size = 128, seed: int = 0, stream: int = 0, **options
) -> tuple[np.ndarray, np.ndarray]:
    """Phantoms 0..n-1: images uint8 (n, H, W, 3) and masks bool (n, H, W).

    Image i is `phantom(i, size=size, seed=seed, stream=stream, **options)`: it does not
    depend on n, and the same arguments give identical bytes.
    """
    h, w = _hw(size)
    images = np.zeros((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        images[i], masks[i], _ = phantom(i, size=size, seed=seed, stream=stream, **options)
    return images, masks


def make_split(
    name: str, n: int, size: Size = 128, seed: int = 0, **options
) -> tuple[np.ndarray, np.ndarray]:
    """`make_phantoms` for the "train", "val" or "test" split: each split has its own random
    stream, so the splits never share a phantom whatever their sizes."""
    if name not in SPLIT_STREAMS:
        raise ValueError(f"unknown split {name!r}; expected one of {tuple(SPLIT_STREAMS)}")
    return make_phantoms(n, size=size, seed=seed, stream=SPLIT_STREAMS[name], **options)


def write_processed_layout(
    root: str | os.PathLike,
    split: str,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    stems: Sequence[str] | None = None,
    image_ext: str = ".png",
) -> Path:
    """Writes `ROOT/<split>/images/<stem><image_ext>` and `ROOT/<split>/masks/<stem>.png`.

    That is the authors' "processed" layout, so phantoms can go through the file readers.
    Stems default to "1", "2", ... as in the release; masks are 8-bit PNGs holding 0 and 255;
    ".jpg" images are written at quality 95. Returns the split folder.
    """
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    stems = [str(i + 1) for i in range(len(images))] if stems is None else list(stems)
    if len(stems) != len(images):
        raise ValueError(f"{len(stems)} stems for {len(images)} images")
    split_dir = Path(root) / split
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    for stem, image, mask in zip(stems, images, masks):
        extra = {"quality": 95} if image_ext.lower() in (".jpg", ".jpeg") else {}
        image_path = split_dir / "images" / f"{stem}{image_ext}"
        Image.fromarray(np.asarray(image)).save(image_path, **extra)
        Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(
            split_dir / "masks" / f"{stem}.png"
        )
    return split_dir


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "dataset root to write <split>/ into", flag_values=fv,
                        required=True)
    flags.DEFINE_enum("split", "test", tuple(SPLIT_STREAMS), "the split, i.e. its random stream",
                      flag_values=fv)
    flags.DEFINE_integer("n", 64, "number of phantoms", flag_values=fv)
    flags.DEFINE_integer("size", 128, "image side in pixels", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "the training config's data.seed", flag_values=fv)


COMMAND = command_line.Command(
    "python -m hanet_jax.data.synthetic",
    "Write a phantom split in the processed layout (DIR/<split>/images, DIR/<split>/masks):\n\n"
    "    python -m hanet_jax.data.synthetic --out=DIR --split=test --n=64 --size=64 --seed=0",
    _define_flags, synopsis="--out=DIR [--flag=value ...]")


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the phantom split that COMMAND describes; returns the exit status."""
    args = COMMAND.parse(argv)
    images, masks = make_split(args.split, args.n, args.size, args.seed)
    path = write_processed_layout(args.out, args.split, images, masks)
    print(f"wrote {args.n} {args.size}x{args.size} '{args.split}' phantoms (seed {args.seed}) to {path}")
    return 0


def run() -> None:
    """The `hanet-synthetic` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
