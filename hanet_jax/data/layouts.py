"""Readers for the three folder layouts HA-Net data comes in.

* ``busi``: Kaggle "Dataset_BUSI_with_GT": ``ROOT/<class>/<class> (N).png`` with
  ``<class> (N)_mask.png`` and sometimes ``_mask_1.png``/``_mask_2.png`` (merged with OR).
* ``udiat``: UDIAT "Dataset B": ``ROOT/original/NNNNNN.png`` with ``ROOT/GT/NNNNNN.png``.
* ``processed``: the HA-Net authors' release: ``ROOT/<split>/images/<stem>.<ext>`` with
  ``ROOT/<split>/masks/<stem>.<ext>`` (or ``ROOT/<split>/images/masks/``, as the UDIAT test
  split ships).

``scan`` pairs files and collects every structural problem; ``list_examples`` raises on them.
``read_image``/``read_mask`` decode one example. Content checks live in ``check.py``.

``read_image`` refuses, naming the file: a missing, empty (0-byte), corrupt or truncated file;
an image smaller than ``MIN_IMAGE_SIDE`` (32) pixels on either side; and pixel formats it does
not read (32-bit integer or float pixels, exotic PIL modes). 16-bit grey images are scaled by
their bit depth (``v * 255 / 65535``, rounded), which comes from the file, not the pixel values.
Masks go through the same emptiness and corruption checks; their size must equal their image's
(``check.py``), and any value > 0 is lesion whatever their bit depth.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

LAYOUTS = ("busi", "udiat", "processed")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
BUSI_CLASSES = ("benign", "malignant")
BUSI_NORMAL = "normal"
# BUSI mask files: "<image stem>_mask.png", "<image stem>_mask_1.png", ...
_BUSI_MASK_RE = re.compile(r"^(?P<base>.+)_mask(?:_\d+)?$")
# Images with a side under this many pixels are refused (``require_min_side``). 32 is the
# model's total downsampling, the smallest input side it runs at (its sides are multiples of
# 32); every image is resized to the model's input, so a smaller one would be blown up from less
# detail than the model's coarsest feature map resolves. Such files are thumbnails, icons or
# broken exports (a 1x1 image was once segmented and scored without complaint); ultrasound
# frames are hundreds of pixels on a side.
MIN_IMAGE_SIDE = 32
# PIL modes ``read_image`` takes as they are, converts to RGB, and scales from 16 bits.
DIRECT_MODES = ("RGB", "L")
CONVERTED_MODES = ("RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# What PIL raises on corrupt, truncated or unsupported files.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError,
                  Image.DecompressionBombError, EOFError)


class DatasetError(Exception):
    """A dataset problem; the message names the offending file or folder."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One image with its mask file(s); several masks are OR-merged."""
    stem: str
    image_path: str
    mask_paths: tuple[str, ...]
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding about one file or folder; ``severity`` is "error" or "warning"."""
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity.upper()}: {self.path}: {self.message}"


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs numerically ("2" < "10", "benign (9)" < "benign (10)")."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


def _image_files(folder: str, problems: list[Problem], report_empty: bool = True
                 ) -> dict[str, str]:
    """Maps stem -> path for the image files directly in ``folder`` (no recursion)."""
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or os.path.isdir(path):
            continue  # hidden files (.DS_Store) and sub-folders such as images/masks
        if ext.lower() not in IMAGE_EXTENSIONS:
            problems.append(Problem(path, "not an image file extension; ignored", "warning"))
            continue
        if stem in found:
            problems.append(Problem(path, f"stem {stem!r} also used by {found[stem]}"))
            continue
        found[stem] = path
    if not found and report_empty:
        problems.append(Problem(folder, "empty folder: no image files"))
    return found


def _require_folder(path: str, problems: list[Problem]) -> bool:
    if not os.path.isdir(path):
        problems.append(Problem(path, "missing folder"))
        return False
    return True


def _pair(images: dict[str, str], masks: dict[str, tuple[str, ...]], problems: list[Problem],
          label: str | None = None) -> list[Example]:
    """Pairs images and masks by stem; reports images without masks and masks without images."""
    examples = []
    for stem, path in images.items():
        if stem in masks:
            examples.append(Example(stem, path, masks[stem], label))
        else:
            problems.append(Problem(path, "image has no mask"))
    for stem, paths in masks.items():
        if stem not in images:
            for path in paths:
                problems.append(Problem(path, "mask has no image"))
    return examples


def _scan_busi(root: str, include_normal: bool, problems: list[Problem]) -> list[Example]:
    classes = BUSI_CLASSES + ((BUSI_NORMAL,) if include_normal else ())
    examples = []
    for cls in classes:
        folder = os.path.join(root, cls)
        if not _require_folder(folder, problems):
            continue
        images, masks = {}, {}
        for stem, path in _image_files(folder, problems).items():
            match = _BUSI_MASK_RE.match(stem)
            if match:
                masks.setdefault(match["base"], []).append(path)
            else:
                images[stem] = path
        masks = {base: tuple(sorted(paths, key=natural_key)) for base, paths in masks.items()}
        examples += _pair(images, masks, problems, label=cls)
    return examples


def _scan_udiat(root: str, problems: list[Problem]) -> list[Example]:
    image_dir, mask_dir = os.path.join(root, "original"), os.path.join(root, "GT")
    have_images = _require_folder(image_dir, problems)
    have_masks = _require_folder(mask_dir, problems)
    if not (have_images and have_masks):
        return []
    images = _image_files(image_dir, problems)
    masks = {stem: (path,) for stem, path in _image_files(mask_dir, problems).items()}
    return _pair(images, masks, problems)


def _scan_processed(root: str, split: str, problems: list[Problem]) -> list[Example]:
    split_dir = os.path.join(root, split)
    image_dir = os.path.join(split_dir, "images")
    if not (_require_folder(split_dir, problems) and _require_folder(image_dir, problems)):
        return []
    mask_dirs = [d for d in (os.path.join(split_dir, "masks"), os.path.join(image_dir, "masks"))
                 if os.path.isdir(d)]
    if not mask_dirs:
        problems.append(Problem(os.path.join(split_dir, "masks"),
                                "missing folder (also looked in images/masks)"))
        return []
    masks: dict[str, tuple[str, ...]] = {}
    for mask_dir in mask_dirs:
        for stem, path in _image_files(mask_dir, problems, report_empty=False).items():
            if stem in masks:
                first = masks[stem][0]
                problems.append(Problem(path, f"second mask for stem {stem!r} (first: {first})"))
            else:
                masks[stem] = (path,)
    if not masks:  # one of the two places may legitimately be an empty leftover
        problems.append(Problem(mask_dirs[0], "empty folder: no image files"))
    return _pair(_image_files(image_dir, problems), masks, problems)


def scan(root: str, layout: str, split: str | None = "train", *,
         include_normal: bool = False) -> tuple[list[Example], list[Problem]]:
    """Pairs the files of one split and returns ``(examples, problems)`` without raising.

    ``busi`` and ``udiat`` ship without split folders: for them ``split`` must be None or
    "train" and means the whole folder (make splits with ``hanet_jax.data.splits``).
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    root = os.fspath(root)
    problems: list[Problem] = []
    if layout != "processed" and split not in (None, "train"):
        raise DatasetError(f"{root}: layout {layout!r} has no split folders; pass split='train' "
                           f"(the whole folder), not {split!r}")
    if layout == "processed" and not split:
        raise DatasetError(f"{root}: layout 'processed' needs a split (e.g. 'train')")
    if not _require_folder(root, problems):
        return [], problems
    if layout == "busi":
        examples = _scan_busi(root, include_normal, problems)
    elif layout == "udiat":
        examples = _scan_udiat(root, problems)
    else:
        examples = _scan_processed(root, split, problems)
    if not examples and not any(p.severity == "error" for p in problems):
        problems.append(Problem(root, "no image/mask pairs found"))
    examples.sort(key=lambda e: natural_key(e.stem))
    return examples, problems


def write_example(root: str, layout: str, split: str, stem: str, image: np.ndarray,
                  mask: np.ndarray, label: str | None = None) -> None:
    """One example as PNGs where `layout` keeps it (the inverse of `scan`): busi
    ``<label>/<stem>.png`` + ``<stem>_mask.png``, udiat ``original/`` + ``GT/``, processed
    ``<split>/images/`` + ``<split>/masks/``. Lossless: `read_image` gives back `image`."""
    from hanet_jax import storage

    if layout == "busi":
        if not label:
            raise DatasetError(f"{stem}: the busi layout needs the example's class")
        image_path = os.path.join(root, label, f"{stem}.png")
        mask_path = os.path.join(root, label, f"{stem}_mask.png")
    elif layout == "udiat":
        image_path = os.path.join(root, "original", f"{stem}.png")
        mask_path = os.path.join(root, "GT", f"{stem}.png")
    else:
        image_path = os.path.join(root, split, "images", f"{stem}.png")
        mask_path = os.path.join(root, split, "masks", f"{stem}.png")
    storage.write_png(image_path, image)
    storage.write_png(mask_path, (np.asarray(mask) > 0).astype(np.uint8) * np.uint8(255))


def format_problems(problems: Sequence[Problem], header: str) -> str:
    """One line per problem under ``header``, for exception messages and the CLI."""
    return "\n".join([header] + [f"  {p}" for p in problems])


def list_examples(root: str, layout: str, split: str | None = "train", *,
                  include_normal: bool = False) -> list[Example]:
    """Lists the image/mask pairs of a split, sorted by natural order of stem.

    Raises ``DatasetError`` naming every structural problem (missing or empty folder, image
    without mask, mask without image). File contents are not read; see ``check.validate``.
    """
    examples, problems = scan(root, layout, split, include_normal=include_normal)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(format_problems(errors, f"{len(errors)} problem(s) in {root} "
                                                    f"(layout={layout}, split={split}):"))
    return examples


def open_image(path: str) -> Image.Image:
    """Opens an image file (header only), refusing a missing or empty file by name.

    An empty (0-byte) file is named as such: PIL's "cannot identify image file" would hide that
    the file is a failed copy or download rather than a format problem.
    """
    try:
        num_bytes = os.path.getsize(path)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    if num_bytes == 0:
        raise DatasetError(f"{path}: empty file (0 bytes)")
    try:
        return Image.open(path)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: cannot open image: {e}") from e


def _load(image: Image.Image, path: str) -> Image.Image:
    """Fully decodes the first frame, so a truncated or corrupt file raises here, by name."""
    try:
        image.load()
    except DECODE_ERRORS as e:
        raise DatasetError(f"{path}: corrupt or truncated image: {e}") from e
    return image


def _decode(path: str) -> Image.Image:
    """Opens and fully decodes the first frame (masks: any mode, any size)."""
    return _load(open_image(path), path)


def require_min_side(path: str, width: int, height: int) -> None:
    """Refuses an image with a side under ``MIN_IMAGE_SIDE`` pixels, naming the file and its size."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DatasetError(f"{path}: image is {width}x{height} pixels; the minimum side is "
                           f"{MIN_IMAGE_SIDE}")


def _png_bit_depth(path: str) -> int | None:
    """The bit depth in a PNG's IHDR chunk (the byte after width and height), or None."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    return head[24]


def sample_bits(image: Image.Image, path: str) -> int | None:
    """Bits per sample of a single-channel integer image ("I;16*" or "I"), read from the file's
    header, never from the pixel values; None when the file does not say.

    PIL opens a 16-bit grey PNG as "I;16" (older versions: "I", which also holds 32-bit TIFFs),
    so "I" is resolved through the PNG IHDR bit depth or the TIFF BitsPerSample tag.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        return 16
    if image.mode != "I":
        return None
    if image.format == "PNG":
        return _png_bit_depth(path)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258)  # BitsPerSample: one value per channel
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        return int(bits) if bits else None
    return None


def require_readable_mode(image: Image.Image, path: str) -> None:
    """Refuses, by name and mode, the pixel formats ``read_image`` cannot turn into 8-bit RGB
    by their bit depth: float pixels, integers wider than 16 bits and exotic modes."""
    mode = image.mode
    if mode in DIRECT_MODES or mode in CONVERTED_MODES or mode in ("1", "LA"):
        return
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        bits = sample_bits(image, path)
        if bits == 16:
            return
        what = f"{bits}-bit" if bits else "integer pixels of unknown bit depth"
        raise DatasetError(f"{path}: {what} grey image (mode {mode}) is not read: only 1-, 8- "
                           f"and 16-bit images are; save it as 8- or 16-bit")
    if mode == "F":
        raise DatasetError(f"{path}: 32-bit float image (mode F) is not read: float pixels have "
                           f"no bit depth to scale by; save it as 8- or 16-bit")
    raise DatasetError(f"{path}: image mode {mode} is not read (grey, RGB, RGBA, palette, 1-bit "
                       f"and 16-bit grey are)")


def scale_to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
    """Scales ``bits``-bit integer samples to uint8 by the bit depth: ``rint(v * 255 / (2**bits
    - 1))``. Never by the image's own range: a dark 16-bit image must stay dark, not be read as
    8-bit because its values happen to stay below 256."""
    top = float(2 ** bits - 1)
    scaled = np.rint(array.astype(np.float64) * (255.0 / top))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def image_size(path: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    with open_image(path) as image:
        width, height = image.size
    return height, width


def read_image(path: str) -> np.ndarray:
    """Reads an image as uint8 RGB (H, W, 3): grey is replicated, alpha dropped, 16-bit grey
    scaled by its bit depth (``scale_to_uint8``), 1-bit to 0/255.

    Raises ``DatasetError`` naming the file when it is missing, empty, corrupt or truncated,
    smaller than ``MIN_IMAGE_SIDE`` on a side, or in a mode that is not read (float, 32-bit).
    The size and the mode come from the header, so such files are refused before decoding.
    """
    with open_image(path) as image:
        require_min_side(path, *image.size)
        require_readable_mode(image, path)
        array = _uint8_pixels(_load(image, path), path)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise DatasetError(f"{path}: unsupported image layout {array.shape} (mode {image.mode})")
    return np.ascontiguousarray(array)


def _uint8_pixels(image: Image.Image, path: str) -> np.ndarray:
    """The decoded pixels as uint8, (H, W) grey or (H, W, 3) RGB, one branch per handled mode."""
    mode = image.mode
    if mode in DIRECT_MODES:
        return np.asarray(image)
    if mode in CONVERTED_MODES:
        return np.asarray(image.convert("RGB"))
    if mode == "LA":
        return np.asarray(image)[..., 0]
    if mode == "1":
        return np.asarray(image).astype(np.uint8) * 255
    if sample_bits(image, path) == 16:  # "I;16*", or "I" from a 16-bit file
        return scale_to_uint8(np.asarray(image), 16)
    require_readable_mode(image, path)  # raises: decoding changed the mode to one not read
    raise DatasetError(f"{path}: image mode {mode} is not read")


def mask_plane(path: str) -> np.ndarray:
    """Decodes one mask file to a 2-D array of raw values (before binarising).

    Colour masks reduce to the maximum over their colour channels (alpha ignored), so "any
    colour channel > 0" means foreground; palette masks are looked up to colours first.
    """
    image = _decode(path)
    if image.mode in ("P", "PA"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode in ("LA",):
        array = array[..., 0]
    elif array.ndim == 3:
        array = array[..., :3].max(axis=-1)
    if array.ndim != 2:
        raise DatasetError(f"{path}: unsupported mask layout {array.shape} (mode {image.mode})")
    return array


def is_binary(plane: np.ndarray) -> bool:
    """True when a mask holds at most two values, one of them 0 (0/1, 0/255, bool...)."""
    if plane.dtype == bool:
        return True
    if plane.dtype == np.uint8:  # bincount is much faster than unique's sort
        values = np.flatnonzero(np.bincount(plane.ravel(), minlength=256))
    else:
        values = np.unique(plane)
    return len(values) <= 1 or (len(values) == 2 and values[0] == 0)


def read_mask(paths: str | Sequence[str], *, binarize: bool = True) -> np.ndarray:
    """Reads one or several mask files, OR-merged, as a bool (H, W) array (foreground = value > 0).

    With ``binarize=False`` a mask with more than two values (e.g. a JPEG-compressed or
    anti-aliased mask) raises ``DatasetError`` instead of being thresholded.
    """
    paths = (paths,) if isinstance(paths, (str, os.PathLike)) else tuple(paths)
    if not paths:
        raise DatasetError("read_mask: no mask paths given")
    merged = None
    for path in paths:
        plane = mask_plane(path)
        if not binarize and not is_binary(plane):
            values = np.unique(plane)[:8].tolist()
            raise DatasetError(f"{path}: mask is not binary (values {values}...)")
        if merged is not None and plane.shape != merged.shape:
            raise DatasetError(f"{path}: mask size {plane.shape} differs from {paths[0]} "
                               f"{merged.shape}")
        merged = plane > 0 if merged is None else merged | (plane > 0)
    return merged
