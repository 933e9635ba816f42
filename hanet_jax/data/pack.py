r"""One file of a dataset's originals, split as the project splits them: a data pack.

    python -m hanet_jax.data.pack DATA_ROOT OUT.npz --dataset busi --size 256

DATA_ROOT holds `BUSI/train/{images,masks}` and `UDIAT/train/{images,masks}`, the authors'
processed release (what scripts/reproduce.sh takes). The pack holds one image per copy set of the
release's numbering (BUSI: file i + 647k copies original i; UDIAT: 361..2700 copy 1..130), the
original, resized to `--size` by `pipeline.resize_pair` (the resize training uses): images as
JPEG (grey when the three channels are equal, as in both releases), masks as 1-bit PNG, each
kind concatenated into one uint8 array with offsets (an .npz without pickles). Next to them, per
original: its stem, its near-duplicate group, its lesion class where the numbering tells it
(BUSI: originals 1..437 benign, 438..647 malignant; UDIAT: unknown), and its side, train, val or
test, in the split a training run from the folder makes: `splits.hold_out`, the function
`train.input` calls, run over every file of the folder, copies included, with the split keys of
`configs/<dataset>.py` (seed, val_split, val_fraction, folds, group_by, release) and the test
hold-out of scripts/reproduce.sh (test_fraction 0.2). So a run from the pack
(`--config.data.source=pack --config.data.pack=OUT.npz`) validates and tests on the very
originals a run from the folder holds out; it trains on the training originals only, without the
release's augmented copies (online augmentation stands in for them).

With `--folds K` (scripts/reproduce.sh's HANET_FOLDS) the non-test originals get side "cv" and a
fold 0..K-1 each; a run validates on fold `config.data.fold`.

A pack over 40 MB (`--max_mb`) is refused: it is meant to travel with the code, one file copied
to an accelerator host instead of a dataset tree. JPEG quality 95 by default: measured on both
releases at 256x256 (docs/data.md), the decoded pixels differ from the uncompressed resized
image by 0.17 (BUSI) and 1.3 (UDIAT) grey levels on average, 99.9% of them by at most 2 and 6
levels, far below the speckle of the images themselves; quality 100 costs 50% more bytes and
lossless PNG 2.4x (BUSI; 1.4x for UDIAT). `--image_codec png` stores the exact pixels instead.
The command prints the largest and the mean absolute difference of every pack it writes, and
records them in the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image

from hanet_jax import command_line, storage
from hanet_jax.data import audit, check, layouts, pipeline, splits
from hanet_jax.data.layouts import DECODE_ERRORS, DatasetError

FORMAT = "hanet-jax data pack"
FORMAT_VERSION = 1
MAX_MB = 40.0  # megabytes of 10**6 bytes
DATASETS = {"busi": "BUSI", "udiat": "UDIAT"}  # --dataset -> its folder under DATA_ROOT
# The config.data keys that decide a run's split; a pack records them, and a run from it must
# use the same (train.input checks).
SPLIT_KEYS = ("seed", "val_split", "val_fraction", "test_fraction", "folds", "group_by",
              "release")
# The project's own test hold-out: scripts/reproduce.sh and scripts/recipe_search.py train with
# --config.data.test_fraction=0.2 (configs/*.py leave it at 0, no test set).
PROJECT_TEST_FRACTION = 0.2
JPEG_QUALITY = 95
IMAGE_CODECS = ("jpeg", "png")
BUSI_BENIGN_LAST, BUSI_ORIGINALS = 437, 647  # the release's numbering (spec: data.md)
SIDES = ("train", "val", "test", "cv")
_ARRAYS = ("meta", "stems", "groups", "classes", "sides", "folds", "image_bytes",
           "image_offsets", "mask_bytes", "mask_offsets")


# ------------------------------------------------------------------------------ reading
@dataclasses.dataclass(frozen=True, eq=False)
class Pack:
    """A pack decoded: images uint8 (N, H, W, 3), masks uint8 0/1 (N, H, W, 1), per original its
    stem, group, class ("" unknown), side ("train" | "val" | "test", or "cv" in a k-fold pack)
    and fold (-1: none), the metadata (`meta["split"]` holds SPLIT_KEYS) and the file's sha256."""
    path: str
    images: np.ndarray
    masks: np.ndarray
    stems: tuple[str, ...]
    groups: np.ndarray
    classes: tuple[str, ...]
    sides: tuple[str, ...]
    folds: np.ndarray
    meta: dict
    sha256: str

    def __len__(self) -> int:
        return len(self.stems)

    def sides_of_fold(self, fold: int = 0) -> list[str]:
        """Each original's side for a run validating on `fold` (a k-fold pack), else `sides`."""
        if not self.meta["split"]["folds"]:
            return list(self.sides)
        return ["test" if s == "test" else "val" if f == fold else "train"
                for s, f in zip(self.sides, self.folds)]


def _corrupt(path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}; write it again with `python -m hanet_jax.data.pack`")


def _slices(data: np.ndarray, offsets: np.ndarray, n: int, path, what: str) -> list[bytes]:
    if (offsets.ndim != 1 or len(offsets) != n + 1 or offsets[0] != 0
            or offsets[-1] != len(data) or np.any(np.diff(offsets) <= 0)):
        raise _corrupt(path, f"the {what} offsets do not fit the {len(data)} bytes of {n} {what}s")
    return [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])]


def _decode(blob: bytes, path, stem: str, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(blob))
        image.load()
        return image
    except DECODE_ERRORS as e:
        raise _corrupt(path, f"the {what} of original {stem} cannot be decoded ({e})") from e


def read_pack(path: str | os.PathLike) -> Pack:
    """The pack at `path`, decoded. Raises DatasetError naming the file when it is missing, not
    a pack, damaged (the zip's CRCs, the offsets, the images) or of another format version."""
    name = storage.text(path)
    try:
        raw = storage.path(path).read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"{name}: pack file not found") from e
    except OSError as e:
        raise DatasetError(f"{name}: cannot read the pack: {e}") from e
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _corrupt(name, f"not a readable data pack (.npz): {e}") from e
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise _corrupt(name, f"not a data pack: no {', '.join(missing)}")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(name, f"unreadable metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _corrupt(name, "not a data pack (no format record)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{name}: pack format version {meta.get('format_version')}; this "
                           f"code reads version {FORMAT_VERSION}: write the pack again with this "
                           f"version's `python -m hanet_jax.data.pack`")
    stems = tuple(str(s) for s in arrays["stems"])
    n = len(stems)
    if any(len(arrays[k]) != n for k in ("groups", "classes", "sides", "folds")):
        raise _corrupt(name, "per-original arrays of different lengths")
    bad = sorted(set(map(str, arrays["sides"])) - set(SIDES))
    if bad:
        raise _corrupt(name, f"unknown side(s) {bad}")
    size = int(meta["size"])
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size, 1), np.uint8)
    image_blobs = _slices(arrays["image_bytes"], arrays["image_offsets"], n, name, "image")
    mask_blobs = _slices(arrays["mask_bytes"], arrays["mask_offsets"], n, name, "mask")
    for i, stem in enumerate(stems):
        image = np.asarray(_decode(image_blobs[i], name, stem, "image"))
        mask = np.asarray(_decode(mask_blobs[i], name, stem, "mask"))
        if image.shape[:2] != (size, size) or mask.shape != (size, size):
            raise _corrupt(name, f"original {stem} is {image.shape[:2]}, mask {mask.shape}, "
                                 f"not {size}x{size}")
        images[i] = image[..., None] if image.ndim == 2 else image
        masks[i, ..., 0] = mask > 0
    return Pack(name, images, masks, stems, arrays["groups"].astype(np.int64),
                tuple(str(c) for c in arrays["classes"]), tuple(str(s) for s in arrays["sides"]),
                arrays["folds"].astype(np.int64), meta, hashlib.sha256(raw).hexdigest())


# ------------------------------------------------------------------------------ writing
def default_split(dataset: str) -> dict:
    """The split keys (SPLIT_KEYS) of `configs/<dataset>.py` (`train.recipes.dataset_recipe`,
    which this room may not import: tests/test_pack.py checks that the two agree), with the
    project's test hold-out (PROJECT_TEST_FRACTION)."""
    return {"seed": 0, "val_split": "grouped", "val_fraction": 0.2,
            "test_fraction": PROJECT_TEST_FRACTION, "folds": 0, "group_by": "processed_release",
            "release": dataset}


def config_split(dataset: str, config_path: str | os.PathLike | None = None) -> dict:
    """The split keys of `config_path`'s `get_config()` (a user's config file, run as train.py
    runs it), with the project's test hold-out when it has none; `default_split(dataset)`
    without a file."""
    if config_path is None:
        return default_split(dataset)
    config_path = Path(config_path)
    if not config_path.is_file():
        raise DatasetError(f"{config_path}: config file not found (--config)")
    spec = importlib.util.spec_from_file_location(f"_hanet_pack_config_{dataset}", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the user's config file
    data = module.get_config().data
    split = {k: data[k] for k in SPLIT_KEYS}
    if not split["test_fraction"]:
        split["test_fraction"] = PROJECT_TEST_FRACTION
    return split


def _copy_sets(examples, release: str) -> dict[str, list]:
    """original stem -> the files of its copy set, in the folder's (natural) order."""
    sets: dict[str, list] = {}
    for ex in examples:
        sets.setdefault(audit.release_original(ex.stem, release), []).append(ex)
    return sets


def _lesion_class(stem: str, dataset: str) -> str:
    if dataset == "busi" and stem.isdigit() and 1 <= int(stem) <= BUSI_ORIGINALS:
        return "benign" if int(stem) <= BUSI_BENIGN_LAST else "malignant"
    return ""


def _sides(examples, split: dict, cache_dir) -> tuple[dict, dict, dict]:
    """stem -> side, stem -> fold (-1: none) and stem -> group over every example of the folder,
    by `splits.hold_out` (the split of a folder run), for each fold of a k-fold pack."""
    keys = {k: split[k] for k in SPLIT_KEYS}
    held = splits.hold_out(examples, **keys, fold=0, cache_dir=cache_dir)
    side = {ex.stem: s for s, part in (("train", held.train), ("val", held.val),
                                       ("test", held.test)) for ex in part}
    fold = {ex.stem: -1 for ex in examples}
    if split["folds"]:
        for k in range(split["folds"]):
            val = held.val if k == 0 else splits.hold_out(
                examples, **keys, fold=k, cache_dir=cache_dir, groups=held.groups).val
            fold.update({ex.stem: k for ex in val})
        side = {stem: "test" if s == "test" else "cv" for stem, s in side.items()}
    return side, fold, held.groups


def _encode_image(image: np.ndarray, quality: int, codec: str = "jpeg") -> bytes:
    grey = bool(np.all(image == image[..., :1]))
    out = io.BytesIO()
    picture = Image.fromarray(image[..., 0] if grey else image)
    if codec == "png":
        picture.save(out, format="PNG", optimize=True)
    else:
        picture.save(out, format="JPEG", quality=quality, subsampling=0, optimize=True)
    return out.getvalue()


def _compression_error(blob: bytes, image: np.ndarray) -> np.ndarray:
    """|decoded - uncompressed image| per pixel and channel."""
    decoded = np.asarray(Image.open(io.BytesIO(blob)), np.int16)
    return np.abs((decoded[..., None] if decoded.ndim == 2 else decoded) - image.astype(np.int16))


def _encode_mask(mask: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(mask[..., 0] > 0).save(out, format="PNG", optimize=True)  # 1-bit
    return out.getvalue()


def _concat(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), np.uint8), offsets


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """`np.savez`'s file (no pickles, no compression: the images are), with fixed member
    timestamps, so that the same inputs give the same bytes (and sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_pack(data_root: str | os.PathLike, out: str | os.PathLike, dataset: str, size: int, *,
               split: dict | None = None, jpeg_quality: int = JPEG_QUALITY,
               image_codec: str = "jpeg", max_mb: float = MAX_MB,
               cache_dir: str | os.PathLike | None = None,
               config_path: str | os.PathLike | None = None) -> dict:
    """Packs DATA_ROOT/<DATASET>/train's originals into `out` (see the module docstring) and
    returns the pack's metadata (with its size in bytes). `split`: SPLIT_KEYS overriding those
    of `config_split(dataset, config_path)`. `cache_dir`: the grouping's fingerprint cache.
    Raises DatasetError (naming the folder, a file, or `out` when over `max_mb`)."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    if image_codec not in IMAGE_CODECS:
        raise DatasetError(f"unknown image codec {image_codec!r}; choose from {IMAGE_CODECS}")
    if not 1 <= jpeg_quality <= 100:
        raise DatasetError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    split = {**config_split(dataset, config_path), **(split or {})}
    split = {k: split[k] for k in SPLIT_KEYS}
    if split["val_split"] != "grouped":
        raise DatasetError(f"a pack holds one file per copy set: val_split={split['val_split']!r} "
                           f"puts copies of one original on both sides; use 'grouped'")
    folder = os.path.join(os.fspath(data_root), DATASETS[dataset])
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: dataset folder does not exist (DATA_ROOT must hold "
                           f"{DATASETS[dataset]}/train/)")
    examples = check.require_valid(folder, "processed", "train")  # every file, as a folder run
    try:
        side, fold, groups = _sides(examples, split, cache_dir)
    except ValueError as e:
        raise DatasetError(f"{folder}: {e} ({', '.join(f'{k}={v}' for k, v in split.items())})"
                           ) from e
    sets = _copy_sets(examples, dataset)
    originals = [members[0] for members in sets.values()]  # the original, else its first copy
    straddling = sum(len({side[m.stem] for m in members}) > 1 for members in sets.values())
    decoded = pipeline.decode_examples(originals, size)

    image_blobs = [_encode_image(im, jpeg_quality, image_codec) for im in decoded.images]
    errors = [_compression_error(b, im) for b, im in zip(image_blobs, decoded.images)]
    stems = [ex.stem for ex in originals]
    on_side = [side[t] for t in stems]
    counts = {s: on_side.count(s) for s in SIDES if s in on_side}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dataset": dataset, "size": int(size),
        "source": storage.text(folder), "n_files": len(examples), "n_originals": len(originals),
        "counts": counts, "split": split,
        "image_codec": (f"JPEG quality {jpeg_quality} (4:4:4; grey when the channels are equal)"
                        if image_codec == "jpeg" else "PNG (lossless)"),
        "mask_codec": "PNG, 1-bit",
        "compression_error": {"max_abs": int(max(e.max() for e in errors)),
                              "mean_abs": float(np.mean([e.mean() for e in errors]))},
        "copy_sets_on_two_sides": straddling,
        "classes": "BUSI release numbering: originals 1-437 benign, 438-647 malignant"
                   if dataset == "busi" else "unknown",
    }
    image_bytes, image_offsets = _concat(image_blobs)
    mask_bytes, mask_offsets = _concat([_encode_mask(m) for m in decoded.masks])
    data = _npz_bytes({
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "stems": np.array(stems, dtype=str),
        "groups": np.array([groups[t] for t in stems], np.int64),
        "classes": np.array([_lesion_class(t, dataset) for t in stems], dtype=str),
        "sides": np.array([side[t] for t in stems], dtype=str),
        "folds": np.array([fold[t] for t in stems], np.int16),
        "image_bytes": image_bytes, "image_offsets": image_offsets,
        "mask_bytes": mask_bytes, "mask_offsets": mask_offsets,
    })
    if len(data) > max_mb * 1e6:
        raise DatasetError(f"{storage.text(out)}: the pack would be {len(data) / 1e6:.1f} MB, over "
                           f"the {max_mb:g} MB limit; not written (lower --size or "
                           f"--jpeg_quality)")
    storage.write_bytes(out, data)
    return {**meta, "path": storage.text(out), "bytes": len(data)}


# ------------------------------------------------------------------ unpacking (for eval)
_UNPACKED: dict[str, tuple[str, str]] = {}


def unpacked_folder(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """The pack's originals written once per process (removed at exit) as a processed-layout
    folder, `<tmp>/<DATASET>/train/{images,masks}/<stem>.png`, losslessly (the pixels a run
    from the pack saw), for eval's `--run_split`: {"root", "layout", "split",
    "include_normal"} of that folder. `sha256`: the pack a run recorded; another file is refused.
    The folder is named BUSI or UDIAT, as the release's, so the BUSI class rule applies."""
    key = storage.text(path)
    if key not in _UNPACKED:
        pack = read_pack(path)
        root = os.path.join(storage.scratch_folder("hanet_pack_"), DATASETS[pack.meta["dataset"]])
        for stem, image, mask in zip(pack.stems, pack.images, pack.masks):
            layouts.write_example(root, "processed", "train", stem, image, mask[..., 0])
        _UNPACKED[key] = (pack.sha256, root)
    digest, root = _UNPACKED[key]
    if sha256 and digest != sha256:
        raise DatasetError(f"{key}: not the pack the run trained from (its sha256 is "
                           f"{digest[:16]}..., the run recorded {sha256[:16]}...)")
    return {"root": root, "layout": "processed", "split": "train", "include_normal": False}


# ------------------------------------------------------------------------- command line
def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("dataset", None, sorted(DATASETS), "which release folder of DATA_ROOT",
                      flag_values=fv, required=True)
    flags.DEFINE_integer("size", 256, "side of the stored images (pipeline.resize_pair)",
                         lower_bound=32, flag_values=fv)
    flags.DEFINE_string("config", None, "a config file whose config.data split keys the pack records "
                        "(default: the split of configs/<dataset>.py, default_split)", flag_values=fv)
    flags.DEFINE_integer("seed", None, "override config.data.seed", flag_values=fv)
    flags.DEFINE_float("val_fraction", None, "override config.data.val_fraction", flag_values=fv)
    flags.DEFINE_float("test_fraction", None, "override the test hold-out (default: the "
                       f"config's, or {PROJECT_TEST_FRACTION} as scripts/reproduce.sh when it "
                       "has none)", flag_values=fv)
    flags.DEFINE_integer("folds", None, "override config.data.folds (k-fold: record each "
                         "original's fold)", flag_values=fv)
    flags.DEFINE_enum("image_codec", "jpeg", IMAGE_CODECS, "jpeg, or png: the exact pixels",
                      flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", JPEG_QUALITY, "JPEG quality of the images",
                         lower_bound=1, upper_bound=100, flag_values=fv)
    flags.DEFINE_float("max_mb", MAX_MB, "refuse a pack over this many MB (10^6 bytes)",
                       flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "fingerprint cache of the grouping", flag_values=fv)


COMMAND = command_line.Command("python -m hanet_jax.data.pack", __doc__, _define_flags,
                               positional=("DATA_ROOT", "OUT"))


def summary_lines(meta: dict) -> list[str]:
    """What the command prints about a pack it wrote."""
    s, err = meta["split"], meta["compression_error"]
    straddling = meta["copy_sets_on_two_sides"]
    return [
        f"wrote {meta['path']}: {meta['bytes'] / 1e6:.2f} MB, {meta['n_originals']} originals of "
        f"{meta['n_files']} files in {meta['source']}, at {meta['size']}x{meta['size']}",
        "sides: " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
        + "; split: " + ", ".join(f"{k}={s[k]}" for k in SPLIT_KEYS),
        f"images: {meta['image_codec']}; vs the uncompressed resized pixels: largest absolute "
        f"difference {err['max_abs']}, mean {err['mean_abs']:.3f} (grey levels of 255)",
    ] + ([f"warning: {straddling} copy sets have files on two sides of this split "
          f"(group_by={s['group_by']} does not join all the release's copies); each original "
          f"is on its own file's side"] if straddling else [])


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    args = COMMAND.parse(argv)
    split = {k: getattr(args, k) for k in ("seed", "val_fraction", "test_fraction", "folds")
             if getattr(args, k) is not None}
    try:
        meta = write_pack(args.data_root, args.out, args.dataset, args.size, split=split,
                          jpeg_quality=args.jpeg_quality, image_codec=args.image_codec,
                          max_mb=args.max_mb,
                          cache_dir=args.cache_dir, config_path=args.config)
    except DatasetError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(meta):
        log(line)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
