"""Segment every image in a folder with a ported checkpoint, a training workdir or an ensemble.

    python predict.py --checkpoint=DIR --input=FOLDER --output=FOLDER [--probabilities] [--tta]
    python predict.py --checkpoint=WORKDIR --settings_from=WORKDIR/eval_test.json ...
    python predict.py --exported=OUT/model.jax --input=FOLDER --output=FOLDER   # or OUT/model.onnx

Writes `<stem>.png` (binary mask, 0/255, at the image's original size) and with
`--probabilities` also `<stem>.npy` (float32 probabilities at the original size). The mask is
the "fixed" protocol's: `prob >= --threshold` (0.5), then `--postprocess` (none); or, with
`--settings_from`, the threshold and post-processing an eval.py JSON's fixed protocol used
(those scripts/reproduce.sh chose on validation), so the masks are the ones that were scored.
With `--exported`, an artifact of `hanet-export` runs instead of a checkpoint (jax.export or
onnxruntime), with the threshold and post-processing its export.json records.
Unreadable files are reported by name and skipped; the exit code is 1 if any failed, 2 on bad
input or a bad command line. A damaged checkpoint is one line naming it (and, for a workdir, the
steps it also holds: `--checkpoint=WORKDIR/checkpoints/STEP` uses one), exit code 2.
`hanet-predict` is the same command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from absl import flags

from hanet_jax import command_line, storage
# NumPy and SciPy only: --help stays fast
from hanet_jax.inference.postprocess import POSTPROCESS, SettingsError, fixed_settings


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None,
                        "ported checkpoint dir, training workdir (its best step), one step of it "
                        "(WORKDIR/checkpoints/STEP), or a dir with ensemble.json (the members' "
                        "average; hanet_jax/inference/ensemble.py)",
                        flag_values=fv)
    flags.DEFINE_string("exported", None, "instead of --checkpoint: a hanet-export model.jax or model.onnx "
                        "(its export.json gives the threshold and post-processing)", flag_values=fv)
    flags.DEFINE_string("input", None, "folder of png/jpg/tif/bmp images", flag_values=fv, required=True)
    flags.DEFINE_string("output", None, "folder for <stem>.png (and <stem>.npy)", flag_values=fv,
                        required=True)
    flags.DEFINE_bool("probabilities", False, "also write float32 <stem>.npy", flag_values=fv)
    flags.DEFINE_float("threshold", None, "mask threshold (default 0.5)", flag_values=fv)
    flags.DEFINE_enum("postprocess", None, POSTPROCESS,
                      "keep one connected component of each mask (default none)", flag_values=fv)
    flags.DEFINE_string("settings_from", None,
                        "an eval.py JSON: take its fixed protocol's threshold and post-processing "
                        "(instead of --threshold/--postprocess)", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "images per forward pass", flag_values=fv)
    flags.DEFINE_bool("tta", False, "average with the horizontally flipped prediction", flag_values=fv)


COMMAND = command_line.Command(
    "python predict.py", __doc__, _define_flags,
    synopsis="--checkpoint=DIR|--exported=FILE --input=FOLDER --output=FOLDER [--flag=value ...]")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    from hanet_jax.ops.cpu import host_memory

    host_memory.keep_freed_host_memory_if_cpu_only()
    from hanet_jax.checkpoints.format import CheckpointError
    from hanet_jax.inference.ensemble import load_predictor
    from hanet_jax.data.layouts import IMAGE_EXTENSIONS, DatasetError, natural_key, read_image
    from hanet_jax.inference.postprocess import fixed_mask

    if (args.checkpoint is None) == (args.exported is None):
        return _error("give one of --checkpoint DIR or --exported FILE")
    if args.exported and (args.settings_from or args.tta):
        return _error("--exported takes its settings from its export.json (TTA is part of the export): "
                      "drop --settings_from/--tta")
    src, dst = Path(args.input), storage.path(args.output)  # the masks may go to a bucket
    if not src.is_dir():
        return _error(f"--input {src} is not a folder")
    if not storage.is_remote(dst) and Path(dst).resolve() == src.resolve():
        return _error(f"--output {dst} is the --input folder: its masks would overwrite PNG inputs")
    if args.batch_size < 1:
        return _error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.settings_from:
        if args.threshold is not None or args.postprocess is not None:
            return _error("--settings_from sets the threshold and post-processing: drop --threshold/--postprocess")
        try:
            threshold, post = fixed_settings(args.settings_from)
        except SettingsError as e:
            return _error(str(e))
    else:
        threshold, post = args.threshold, args.postprocess
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        return _error(f"--threshold must be in [0, 1], got {threshold}")
    files = sorted((f for f in src.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()),
                   key=lambda f: natural_key(f.name))
    if not files:
        return _error(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {src}")
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:  # both would be written to <stem>.png
        return _error(f"{src}: images share a stem, so their masks would overwrite each other: "
                      + "; ".join(", ".join(n) for n in clashes[:5]))
    try:  # one checkpoint, an ensemble's average (hanet_jax/ensemble.py), or an export
        if args.exported:
            from hanet_jax.inference.exported import ExportedPredictor

            predictor = ExportedPredictor(args.exported, batch_size=args.batch_size)
            threshold = predictor.threshold if threshold is None else threshold
            post = post or predictor.postprocess
        else:
            predictor = load_predictor(args.checkpoint, batch_size=args.batch_size, tta=args.tta)
    except CheckpointError as e:
        return _error(str(e))
    threshold = 0.5 if threshold is None else threshold
    post = post or "none"
    dst.mkdir(parents=True, exist_ok=True)

    failed, done = [], 0
    for start in range(0, len(files), args.batch_size):
        chunk, images = [], []
        for f in files[start:start + args.batch_size]:
            try:
                images.append(read_image(str(f)))
                chunk.append(f)
            except DatasetError as e:
                failed.append(f)
                # The readers' messages name the file already.
                print(f"skipped: {e}" if str(f) in str(e) else f"skipped {f}: {e}", file=sys.stderr)
        if not images:
            continue
        for f, prob in zip(chunk, predictor(images)):
            mask = fixed_mask(prob, threshold, post)
            storage.write_png(dst / f"{f.stem}.png", (mask * 255).astype(np.uint8))
            if args.probabilities:
                storage.write_npy(dst / f"{f.stem}.npy", prob.astype(np.float32))
            done += 1
    print(f"wrote {done} mask(s) to {dst} (threshold {threshold:g}, post-processing {post})"
          + (f"; {len(failed)} file(s) failed" if failed else ""))
    return 1 if failed else 0


def run() -> None:
    """The `hanet-predict` console script."""
    sys.exit(main())
