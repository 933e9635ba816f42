"""Export a checkpoint for serving: StableHLO (`model.jax`), a TensorFlow SavedModel and ONNX.

    hanet-export --checkpoint=DIR --out=OUT [--formats=jax,savedmodel,onnx] [--platforms=cpu,cuda,tpu]
                 [--image_size=N[,W]] [--tta] [--settings_from=EVAL_JSON]

DIR is anything `predict.py --checkpoint` takes: a training workdir, a ported checkpoint or an
ensemble (its members' average). OUT receives
  model.jax      a serialized jax.export.Exported: float32 NHWC images in [0, 1] at the model size
                 -> float32 probabilities (N, H, W, 1), symbolic batch, lowered for --platforms;
                 it runs with `jax.export.deserialize` alone;
  saved_model/   a SavedModel whose `serving_default` maps `image` to `probabilities`;
  model.onnx     the same as an ONNX graph (opset 23; needs `pip install 'hanet-jax[onnx]'`);
  export.json    names, dtypes, layout, value range, the preprocessing predict.py applies, the
                 threshold and post-processing, the source checkpoint, the platforms, each
                 format's largest difference from the Flax model, and the versions.
The threshold and post-processing come from --settings_from (an eval.py JSON), else from
DIR/eval_test.json where it exists (scripts/reproduce.sh chooses them on validation data), else
0.5 and none. `predict.py --exported OUT/model.jax` (or model.onnx) applies them.

Every format is traced with the CPU handlers off: the artifacts hold XLA's ops only. Exit status
0; 1 if a format failed (one line naming the op its converter cannot express); 2 on bad input.
`python -m hanet_jax.export` is the same command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import flags

from hanet_jax import command_line, storage

FORMATS = ("jax", "savedmodel", "onnx")
PLATFORMS = ("cpu", "cuda", "tpu")
MAX_DIFFERENCE = 1e-4  # largest |probability| difference an export may show against the Flax model


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "training workdir, ported checkpoint, or ensemble dir",
                        flag_values=fv, required=True)
    flags.DEFINE_string("out", None, "folder for the artifacts and export.json", flag_values=fv, required=True)
    flags.DEFINE_list("formats", list(FORMATS), f"formats to write, some of {','.join(FORMATS)}", flag_values=fv)
    flags.DEFINE_list("platforms", list(PLATFORMS), "platforms model.jax and the SavedModel are lowered for",
                      flag_values=fv)
    command_line.DEFINE_integer_list("image_size", None, "the model size (default: the checkpoint's); "
                                     "another works only without size-dependent weights", flag_values=fv)
    flags.DEFINE_bool("tta", False, "export the flip-averaged prediction, as predict.py --tta", flag_values=fv)
    flags.DEFINE_string("settings_from", None, "an eval.py JSON whose fixed protocol gives the threshold "
                        "and post-processing (default: CHECKPOINT/eval_test.json if present)", flag_values=fv)


COMMAND = command_line.Command("hanet-export", __doc__, _define_flags,
                               synopsis="--checkpoint=DIR --out=OUT [--flag=value ...]")


def _error(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _postprocessing(checkpoint: str, settings_from: str | None) -> dict:
    from hanet_jax.export.manifest import postprocessing
    from hanet_jax.inference.postprocess import fixed_settings

    path = storage.path(settings_from or storage.path(checkpoint) / "eval_test.json")
    if settings_from or path.is_file():
        threshold, post = fixed_settings(os.fspath(path))  # SettingsError names the file
        return postprocessing(threshold, post, f"{path} (fixed protocol)")
    return postprocessing(0.5, "none", "default: no eval.py JSON given or found in the checkpoint")


def _check(fmt: str, out: Path, serving, x, reference) -> dict:
    """The artifact on `x` against the Flax model: its largest absolute difference."""
    import numpy as np

    from hanet_jax.export import to_savedmodel
    from hanet_jax.inference.exported import load_runner

    files = {"jax": out / "model.jax", "onnx": out / "model.onnx"}
    run = to_savedmodel.load(out / to_savedmodel.DIR) if fmt == "savedmodel" else load_runner(files[fmt])
    got = np.asarray(run(x))
    if got.shape != reference.shape:
        return {"n_images": len(x), "shape": list(got.shape), "expected_shape": list(reference.shape), "ok": False}
    diff = float(np.max(np.abs(got - reference)))
    return {"n_images": len(x), "max_abs_difference": diff, "ok": diff <= MAX_DIFFERENCE}


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    if not args.formats or set(args.formats) - set(FORMATS):
        return _error(f"--formats must name some of {', '.join(FORMATS)}, got {','.join(args.formats)}")
    formats = [f for f in FORMATS if f in args.formats]
    bad = [p for p in args.platforms if p not in PLATFORMS]
    if bad or not args.platforms:
        return _error(f"--platforms must name some of {', '.join(PLATFORMS)}, got {','.join(args.platforms)}")
    if args.image_size is not None and len(args.image_size) not in (1, 2):
        return _error(f"--image_size takes N or H,W, got {args.image_size}")
    import jax
    import numpy as np

    from hanet_jax.export import manifest, to_onnx, to_savedmodel, to_stablehlo
    from hanet_jax.export.serving_function import ExportError, serving_function
    from hanet_jax.inference.postprocess import SettingsError

    size = None if args.image_size is None else (list(args.image_size) * 2)[:2]
    try:
        post = _postprocessing(args.checkpoint, args.settings_from)
        serving = serving_function(args.checkpoint, tta=args.tta, image_size=size)
    except (ExportError, SettingsError) as e:
        return _error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x = serving.example_inputs(3)
    reference = np.asarray(jax.jit(serving.fn)(x))  # the Flax model as predict.py runs it
    writers = {"jax": lambda: to_stablehlo.write(serving, out, args.platforms),
               "savedmodel": lambda: to_savedmodel.write(serving, out, args.platforms),
               "onnx": lambda: to_onnx.write(serving, out)}
    written, checks, failed = {}, {}, []
    for fmt in formats:
        try:
            written[fmt] = writers[fmt]()
        except ExportError as e:
            failed.append(str(e))
            print(f"error: {e}", file=sys.stderr)
            continue
        checks[fmt] = _check(fmt, out, serving, x, reference)
        entry = written[fmt].get("file") or written[fmt].get("dir")
        diff = checks[fmt].get("max_abs_difference")
        print(f"{fmt:<10} {out / entry}: largest difference from the Flax model "
              f"{'n/a' if diff is None else f'{diff:.1e}'} on {len(x)} images"
              + ("" if checks[fmt]["ok"] else f"  (over {MAX_DIFFERENCE:g}!)"))
    if not written:
        return 1
    path = manifest.write(out, serving, checkpoint=args.checkpoint, formats=written, platforms=args.platforms,
                          post=post, checks=checks)
    print(f"wrote {path} (threshold {post['threshold']:g}, post-processing {post['postprocess']}; "
          f"{post['source']})")
    off = [f for f, c in checks.items() if not c["ok"]]
    for fmt in off:
        failed.append(f"{fmt}: differs from the Flax model by more than {MAX_DIFFERENCE:g}")
    return 1 if failed else 0


def run() -> None:
    """The `hanet-export` console script."""
    sys.exit(main())
