"""Evaluate a checkpoint on a dataset split: metrics JSON, per-image CSV, overlays, Grad-CAM.

    python eval.py --checkpoint DIR --data_dir ROOT --layout processed --split test \\
        --protocol both --out results.json [--per_image per_image.csv] [--overlays DIR] \\
        [--tta] [--threshold 0.5 | --threshold_from_split val] [--model_resolution] \\
        [--gradcam DIR [--gradcam_stems a,b,c]] [--bootstrap 2000 --seed 0]
    python eval.py --checkpoint WORKDIR --run_split test --threshold_from_split val \
        --protocol both --out results.json
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
Exit status: 0 on success, 2 on bad input (the message names the file).
"""

from __future__ import annotations

import argparse
import sys

from hanet_jax.inference.postprocess import POSTPROCESS  # NumPy and SciPy only: --help stays fast


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="ported checkpoint dir, training workdir, or a dir with ensemble.json "
                        "(the members' average; hanet_jax/ensemble.py)")
    p.add_argument("--data_dir", default=None, help="dataset root (for 'processed': holds <split>/images)")
    p.add_argument("--layout", default=None, choices=("processed", "busi", "udiat"))
    p.add_argument("--split", default="test", help="split folder ('processed'); 'train' = all for busi/udiat")
    p.add_argument("--run_split", metavar="SPLIT", default=None, choices=("val", "test"),
                   help="instead of --data_dir/--layout/--split: the images a training workdir "
                        "held out (CHECKPOINT/data_split.json)")
    p.add_argument("--protocol", default="fixed", choices=("fixed", "paper_oracle", "both"))
    p.add_argument("--threshold", type=float, default=None, help="fixed-protocol threshold (default 0.5)")
    p.add_argument("--threshold_from_split", metavar="SPLIT", default=None,
                   help="choose the fixed threshold on this split (e.g. val) by mean Dice")
    p.add_argument("--postprocess", default="none", choices=(*POSTPROCESS, "auto"),
                   help="fixed protocol: keep one connected component (the largest, or the one "
                        "with the most probability mass), or choose on the --threshold_from_split "
                        "images among these and none (auto)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--per_image", metavar="CSV", default=None, help="per-image CSV (one row per image and protocol)")
    p.add_argument("--overlays", metavar="DIR", default=None, help="overlays (fixed protocol) and cases_grid.png")
    p.add_argument("--tta", action="store_true", help="also report horizontal-flip TTA, separately")
    p.add_argument("--model_resolution", action="store_true",
                   help="score at the model's size (mask resized by nearest), as the release did")
    p.add_argument("--gradcam", metavar="DIR", default=None, help="Grad-CAM figures of the four SFEB outputs")
    p.add_argument("--gradcam_stems", default="", help="comma-separated stems (default: best, median, worst)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--batch_size", type=int, default=8)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hanet_jax.ops.cpu import host_memory

    host_memory.keep_freed_host_memory_if_cpu_only()
    from hanet_jax.eval import evaluate as eval_lib
    from hanet_jax.checkpoints.format import CheckpointError
    from hanet_jax.data.layouts import DatasetError

    protocols = ("fixed", "paper_oracle") if args.protocol == "both" else (args.protocol,)
    if protocols == ("paper_oracle",):
        print("note: paper_oracle chooses each threshold with the ground truth; report it next to "
              "'fixed' (--protocol both)", file=sys.stderr)
    cfg = eval_lib.EvalConfig(
        checkpoint=args.checkpoint, data_dir=args.data_dir, layout=args.layout, split=args.split,
        out=args.out, protocols=protocols, threshold=args.threshold, per_image=args.per_image,
        overlays=args.overlays, tta=args.tta, threshold_from_split=args.threshold_from_split,
        postprocess=args.postprocess,
        run_split=args.run_split, model_resolution=args.model_resolution, gradcam=args.gradcam,
        gradcam_stems=tuple(s.strip() for s in args.gradcam_stems.split(",") if s.strip()),
        bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size)
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
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
