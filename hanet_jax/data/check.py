"""Validates a dataset folder and reports every problem, each naming its file.

Usage: ``python -m hanet_jax.data.check ROOT --layout=processed --split=train`` (or
``hanet-data-check ...``), ROOT being the dataset folder (for 'processed': the one holding
<split>/). Exit status 1 when there is any error, 2 on a bad command line, 0 otherwise.

Speed: image sizes come from file headers. Images are checked for corruption without a
full decode where the format allows (PNG: chunk CRCs; JPEG: the end-of-image marker that a
truncated file lacks); other formats, and every mask (its values are needed), are decoded.
``deep=True`` decodes every image fully.

Refused, each naming its file (``layouts.read_image`` refuses the same): a missing, empty
(0-byte), corrupt or truncated file; an image smaller than ``layouts.MIN_IMAGE_SIDE`` (32) pixels
on a side; an image in a mode the readers do not handle (float, 32-bit integer). A 16-bit grey
image is read scaled by its bit depth; one whose values all fit 8 bits gets a warning, since it
then reads nearly black.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from absl import flags

from hanet_jax import command_line
from hanet_jax.data import layouts
from hanet_jax.data.layouts import DatasetError, Example, Problem

_JPEG_EOI = b"\xff\xd9"


@dataclasses.dataclass
class Report:
    """Outcome of ``validate``: the examples found and every problem."""
    root: str
    layout: str
    split: str | None
    examples: list[Example]
    problems: list[Problem]
    num_empty_masks: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"{self.root} (layout={self.layout}, split={self.split}): "
                f"{len(self.examples)} pairs, {self.num_empty_masks} empty masks, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings "
                f"[{self.seconds:.1f} s]")

    def format(self) -> str:
        """The summary line, then one line per problem."""
        return layouts.format_problems(self.problems, self.summary())


def check_image_file(path: str, *, deep: bool = False, mask: bool = False) -> tuple[int, int]:
    """Returns (height, width); raises ``DatasetError`` naming the file when it is missing, empty,
    unreadable or corrupt, and, for an image (``mask=False``), when it is smaller than
    ``layouts.MIN_IMAGE_SIDE`` on a side or in a mode ``layouts.read_image`` does not read.

    Masks skip the last two: their size must equal their image's (checked by the caller), and any
    mode is read as "value > 0 is lesion".
    """
    with layouts.open_image(path) as image:
        (width, height), fmt = image.size, image.format
        if not mask:  # from the header: refused before any decoding
            layouts.require_min_side(path, width, height)
            layouts.require_readable_mode(image, path)
        try:
            if deep or fmt not in ("PNG", "JPEG"):
                image.load()
            elif fmt == "PNG":
                image.verify()  # reads every chunk and checks its CRC, without inflating
        except layouts.DECODE_ERRORS as e:
            raise DatasetError(f"{path}: corrupt or unreadable image: {e}") from e
    if fmt == "JPEG" and not deep:
        # A truncated JPEG lacks its end-of-image marker; some writers pad after it.
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 1024))
            if _JPEG_EOI not in f.read():
                raise DatasetError(
                    f"{path}: corrupt or truncated image: no JPEG end-of-image marker")
    return height, width


def sixteen_bit_range_warning(path: str) -> str | None:
    """For a 16-bit grey image whose values all fit 8 bits, what it reads as; else None.

    ``read_image`` scales 16-bit images by their bit depth, so such an image reads nearly black.
    That is right for a dark 16-bit image, but far more often the file holds 8-bit values written
    as 16-bit, and the user should know before training on black images. Only 16-bit files are
    decoded here (the header says which).
    """
    with layouts.open_image(path) as image:
        if layouts.sample_bits(image, path) != 16:
            return None
        try:
            image.load()
        except layouts.DECODE_ERRORS as e:
            raise DatasetError(f"{path}: corrupt or truncated image: {e}") from e
        top = int(np.asarray(image).max(initial=0))
    if top > 255:
        return None
    scaled = int(layouts.scale_to_uint8(np.array([top]), 16)[0])
    return (f"16-bit image whose values stay within 0..{top} of 65535: scaled by its bit depth it "
            f"reads as 0..{scaled} of 255, nearly black; if it holds 8-bit values, save it as "
            f"8-bit")


def _check_example(example: Example, *, binarize_masks: bool, deep: bool,
                   problems: list[Problem]) -> bool:
    """Checks one pair, appending problems; returns True when the merged mask is empty."""
    try:
        size = check_image_file(example.image_path, deep=deep)
        dark = sixteen_bit_range_warning(example.image_path)
        if dark:
            problems.append(Problem(example.image_path, dark, "warning"))
    except DatasetError as e:
        problems.append(Problem(example.image_path, _strip_path(e, example.image_path)))
        size = None
    empty = True
    for path in example.mask_paths:
        try:
            if path.lower().endswith(".png"):
                check_image_file(path, mask=True)  # CRCs catch damage the decoder tolerates
            plane = layouts.mask_plane(path)
        except DatasetError as e:
            problems.append(Problem(path, _strip_path(e, path)))
            continue
        if size is not None and plane.shape != size:
            (mask_h, mask_w), (height, width) = plane.shape, size
            problems.append(Problem(path, f"mask size {mask_w}x{mask_h} differs from image "
                                          f"{width}x{height} ({example.image_path})"))
        if not layouts.is_binary(plane):
            values = np.unique(plane)
            detail = f"mask is not binary ({len(values)} values, {values.min()}..{values.max()})"
            if binarize_masks:
                problems.append(Problem(path, detail + "; binarised as value > 0", "warning"))
            else:
                problems.append(Problem(path, detail))
        empty = empty and not plane.any()
    return empty


def _strip_path(error: DatasetError, path: str) -> str:
    """The error text without its leading "path: " (``Problem`` prints the path itself)."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def validate(root: str, layout: str, split: str | None = "train", *, include_normal: bool = False,
             binarize_masks: bool = True, deep: bool = False) -> Report:
    """Checks every pair of a split and collects every problem (see the module docstring)."""
    start = time.perf_counter()
    examples, problems = layouts.scan(root, layout, split, include_normal=include_normal)
    num_empty = 0
    for example in examples:
        num_empty += _check_example(example, binarize_masks=binarize_masks, deep=deep,
                                    problems=problems)
    return Report(os.fspath(root), layout, split, examples, problems, num_empty,
                  time.perf_counter() - start)


def require_valid(root: str, layout: str, split: str | None = "train", *,
                  include_normal: bool = False, binarize_masks: bool = True,
                  deep: bool = False) -> list[Example]:
    """Validates and returns the examples; raises ``DatasetError`` listing every error."""
    report = validate(root, layout, split, include_normal=include_normal,
                      binarize_masks=binarize_masks, deep=deep)
    if not report.ok:
        raise DatasetError(layouts.format_problems(report.errors, report.summary()))
    return report.examples


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("layout", "processed", layouts.LAYOUTS, "dataset layout", flag_values=fv)
    flags.DEFINE_string("split", "train", "split folder for 'processed'; 'train' (= all) for busi/udiat",
                        flag_values=fv)
    flags.DEFINE_bool("include_normal", False, "busi: also read the 'normal' class (empty masks)",
                      flag_values=fv)
    flags.DEFINE_bool("strict_masks", False,
                      "report non-binary masks as errors instead of binarising them", flag_values=fv)
    flags.DEFINE_bool("deep", False, "fully decode every image", flag_values=fv)


COMMAND = command_line.Command("python -m hanet_jax.data.check", __doc__, _define_flags,
                               positional=("ROOT",))


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    try:
        report = validate(args.root, args.layout, args.split, include_normal=args.include_normal,
                          binarize_masks=not args.strict_masks, deep=args.deep)
    except DatasetError as e:  # bad arguments for the layout
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


def run() -> None:
    """The `hanet-data-check` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
