"""Evaluate a checkpoint on a dataset split: metrics JSON, per-image CSV, overlays, Grad-CAM.

    python eval.py --checkpoint=DIR --data_dir=ROOT --layout=processed --split=test \\
        --protocol=both --out=results.json [--per_image=per_image.csv] [--overlays=DIR] \\
        [--tta] [--threshold=0.5 | --threshold_from_split=val] [--model_resolution] \\
        [--gradcam=DIR [--gradcam_stems=a,b,c]] [--bootstrap=2000 --seed=0] \\
        [--labels=classes.csv] [--include_normal] [--overlays_order=worst]
    python eval.py --checkpoint=WORKDIR --run_split=test --threshold_from_split=val \\
        --protocol=both --out=results.json
        # the images a training run held out (WORKDIR/data_split.json: val, and test when the
        # run had config.data.test_fraction > 0)

Protocols (spec: evaluation.md): "fixed" binarises every image at one threshold (0.5, or the
one with the best mean Dice on the validation split: --threshold_from_split val, grid
0.05..0.95 step 0.05), optionally keeping one connected component: the largest (--postprocess
largest_component) or the one with the most probability mass (most_probable_component), or
auto: one of these or none, chosen on that validation split with the threshold (equal Dice
goes to none, then largest, whatever the thresholds). "paper_oracle" picks each image's
threshold from its own ground truth, as the release did. It is an oracle; report it next to
"fixed" (--protocol both).

The JSON holds per protocol the mean over images (undefined values left out and counted),
the pooled value (from summed counts) and a bootstrap 95% interval of the mean. --tta adds
"protocols_tta" (horizontal-flip averaging), with CSV protocol names fixed+tta and
paper_oracle+tta. Images are scored at their mask's resolution unless --model_resolution.

Beside the overall means, each protocol reports its strata ("strata" in the JSON, a short table
here; hanet_jax/eval/strata.py): mean Dice and Jaccard with group-resampled 95% intervals per
lesion class and per tercile of lesion size (the ground truth's area as a fraction of the
image; the edges are printed), and the lesions missed (Dice < 0.1), "missed: N of M". The class
comes from --labels (a CSV of stem,class), the BUSI layout's folders, or the processed BUSI
release's numbering (1-437 benign, 438-647 malignant, copy i+647k as i); elsewhere it is unknown,
and the output says so. Images with an empty ground truth (BUSI's normal class:
--include_normal) are no lesions: they give the share of lesion-free images with a predicted
lesion. The per-image CSV adds the columns class and lesion_area. --overlays_order=worst draws
the overlays grid as the 12 lowest-Dice images, worst first.

`hanet-eval` is the same command. Exit status: 0 on success, 2 on bad input (the message names
the file) or a bad command line.
"""

from __future__ import annotations

import sys

from absl import flags

from hanet_jax import command_line
from hanet_jax.inference.postprocess import POSTPROCESS  # NumPy and SciPy only: --help stays fast


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None,
                        "ported checkpoint dir, training workdir, or a dir with ensemble.json "
                        "(the members' average; hanet_jax/inference/ensemble.py)",
                        flag_values=fv, required=True)
    flags.DEFINE_string("data_dir", None, "dataset root (for 'processed': holds <split>/images)",
                        flag_values=fv)
    flags.DEFINE_enum("layout", None, ("processed", "busi", "udiat"), "dataset layout", flag_values=fv)
    flags.DEFINE_string("split", "test", "split folder ('processed'); 'train' = all for busi/udiat",
                        flag_values=fv)
    flags.DEFINE_enum("run_split", None, ("val", "test"),
                      "instead of --data_dir/--layout/--split: the images a training workdir held "
                      "out (CHECKPOINT/data_split.json)", flag_values=fv)
    flags.DEFINE_string("split_from", None, "with --run_split: take the held-out images from "
                        "this training workdir's data_split.json instead of the checkpoint's (a "
                        "model scored on another dataset's test set; --threshold_from_split val "
                        "stays the checkpoint's own)", flag_values=fv)
    flags.DEFINE_string("source", None, "with --run_split, for a run of several sources "
                        "(config.data.sources): score this source's held-out images",
                        flag_values=fv)
    flags.DEFINE_enum("protocol", "fixed", ("fixed", "paper_oracle", "both"), "scoring protocol(s)",
                      flag_values=fv)
    flags.DEFINE_float("threshold", None, "fixed-protocol threshold (default 0.5)", flag_values=fv)
    flags.DEFINE_string("threshold_from_split", None,
                        "choose the fixed threshold on this split (e.g. val) by mean Dice",
                        flag_values=fv)
    flags.DEFINE_enum("postprocess", "none", (*POSTPROCESS, "auto"),
                      "fixed protocol: keep one connected component (the largest, or the one with "
                      "the most probability mass), or choose on the --threshold_from_split images "
                      "among these and none (auto)", flag_values=fv)
    flags.DEFINE_string("out", None, "metrics JSON", flag_values=fv, required=True)
    flags.DEFINE_string("per_image", None, "per-image CSV (one row per image and protocol)",
                        flag_values=fv)
    flags.DEFINE_string("overlays", None, "folder for overlays (fixed protocol) and cases_grid.png",
                        flag_values=fv)
    flags.DEFINE_bool("tta", False, "also report horizontal-flip TTA, separately", flag_values=fv)
    flags.DEFINE_bool("model_resolution", False,
                      "score at the model's size (mask resized by nearest), as the release did",
                      flag_values=fv)
    flags.DEFINE_string("gradcam", None, "folder for Grad-CAM figures of the four SFEB outputs",
                        flag_values=fv)
    flags.DEFINE_list("gradcam_stems", [], "comma-separated stems (default: best, median, worst)",
                      flag_values=fv)
    flags.DEFINE_integer("bootstrap", 2000, "bootstrap resamples (0: no intervals)", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "bootstrap seed", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "images per forward pass", flag_values=fv)
    flags.DEFINE_string("labels", None,
                        "CSV of stem,class: each image's lesion class for the class strata "
                        "(default: the busi layout's folders, or the processed BUSI release's numbering)",
                        flag_values=fv)
    flags.DEFINE_bool("include_normal", False,
                      "busi layout: also score the normal (lesion-free) images, for the share "
                      "with a predicted lesion", flag_values=fv)
    flags.DEFINE_enum("overlays_order", "cases", ("cases", "worst"),
                      "the --overlays grid: best, median and worst (cases), or the 12 lowest-Dice "
                      "images, worst first (worst)", flag_values=fv)


COMMAND = command_line.Command("python eval.py", __doc__, _define_flags,
                               synopsis="--checkpoint=DIR --out=JSON [--flag=value ...]")


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    from hanet_jax.ops.cpu import host_memory

    host_memory.keep_freed_host_memory_if_cpu_only()
    from hanet_jax.checkpoints.format import CheckpointError
    from hanet_jax.data.layouts import DatasetError
    from hanet_jax.eval import evaluate as eval_lib
    from hanet_jax.eval import strata

    protocols = ("fixed", "paper_oracle") if args.protocol == "both" else (args.protocol,)
    if protocols == ("paper_oracle",):
        print("note: paper_oracle chooses each threshold with the ground truth; report it next to "
              "'fixed' (--protocol=both)", file=sys.stderr)
    cfg = eval_lib.EvalConfig(
        checkpoint=args.checkpoint, data_dir=args.data_dir, layout=args.layout, split=args.split,
        out=args.out, protocols=protocols, threshold=args.threshold, per_image=args.per_image,
        overlays=args.overlays, tta=args.tta, threshold_from_split=args.threshold_from_split,
        postprocess=args.postprocess,
        run_split=args.run_split, split_from=args.split_from, source=args.source,
        model_resolution=args.model_resolution, gradcam=args.gradcam,
        gradcam_stems=tuple(s.strip() for s in args.gradcam_stems if s.strip()),
        bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size, labels=args.labels,
        include_normal=args.include_normal, overlays_order=args.overlays_order)
    try:
        report = eval_lib.run(cfg)
    except (DatasetError, CheckpointError, eval_lib.EvalError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key in ("protocols", "protocols_tta"):
        for name, s in report.get(key, {}).items():
            label = name + (eval_lib.TTA_SUFFIX if key == "protocols_tta" else "")
            print(f"{label:18s} dice {s['mean']['dice']:.4f}  jaccard {s['mean']['jaccard']:.4f}  "
                  f"(mean of {report['n_images']} images)")
    for key in ("protocols", "protocols_tta"):
        for name, s in report.get(key, {}).items():
            label = name + (eval_lib.TTA_SUFFIX if key == "protocols_tta" else "")
            print("\n".join(strata.format_table(s["strata"], label)))
    print(f"wrote {args.out}")
    return 0


def run() -> None:
    """The `hanet-eval` console script."""
    sys.exit(main())
