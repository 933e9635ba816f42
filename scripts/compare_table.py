r"""Tables 4 and 5, honestly: HA-Net against the baselines on the same split, recipe and protocol.

    python scripts/compare_table.py --workdir WORKDIR [--doc docs/baselines.md]

WORKDIR is what `bash scripts/reproduce.sh compare DATA_ROOT WORKDIR` fills:
WORKDIR/<dataset>/<architecture>, one `reproduce.sh <dataset>` run each. Per dataset, one row per
architecture that has finished (its `eval_test.json`): test Dice and Jaccard with group-resampled
95% CIs under the fixed protocol (threshold and post-processing chosen on validation) and under
the paper's oracle, missed lesions, the training wall time (`summary.json`) and the forward
pass's GMACs per image at the run's input size. Then HA-Net against each baseline: the Wilcoxon
signed-rank test on per-group means of the fixed-protocol Dice (one value per original lesion;
`hanet_jax.eval.compare`), with the number of groups and, for contrast only, the per-image
p-value. `--doc` writes each dataset's table between `<!-- compare:<dataset>:begin -->` and
`<!-- compare:<dataset>:end -->` of that file; without it, prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from hanet_jax import command_line
from hanet_jax.eval import compare
from hanet_jax.eval.metrics import read_per_image_csv
from hanet_jax.models.architectures import ARCHITECTURES
import results_table  # beside this script (Python imports from a script's own folder): the marker writer

DATASETS = ("busi", "udiat")
NAMES = {"hanet": "HA-Net", "unet": "U-Net", "attention_unet": "Attention U-Net",
         "unet_plus_plus": "UNet++"}
# The paper's Tables 4 and 5 (Dice, under its oracle protocol on test images that are copies of
# training images) and its Wilcoxon p-values of HA-Net against each (where it gives them).
PAPER_DICE = {"busi": {"hanet": 0.973}, "udiat": {"hanet": 0.924}}


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "a `reproduce.sh compare` WORKDIR", flag_values=fv,
                        required=True)
    results_table.define_doc_flag(fv)


COMMAND = command_line.Command("python scripts/compare_table.py", __doc__, _define_flags)


def _macs(run: Path) -> float:
    """GMACs of one forward pass at the run's input size (conv + matmul, from the jaxpr)."""
    import jax
    import jax.numpy as jnp

    from hanet_jax.bench.flops import matmul_macs
    from hanet_jax.checkpoints.format import read_meta
    from hanet_jax.models.architectures import model_from_config

    meta = read_meta(run)
    model = model_from_config(meta["model"])
    x = jnp.zeros((1, *meta["image_size"], 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    return matmul_macs(lambda v, x: model.apply(v, x, train=False), variables, x) / 1e9


def _row(name: str, run: Path) -> str:
    report = json.loads((run / "eval_test.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    fixed, oracle = report["protocols"]["fixed"], report["protocols"]["paper_oracle"]
    lesions = fixed.get("strata", {}).get("lesions", {})
    missed = (f"{lesions['n_missed']} of {lesions['n_lesions']}" if lesions else "–")
    ci = fixed["ci95"]["dice"]
    return (f"| {NAMES[name]} | {fixed['mean']['dice']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
            f"{fixed['mean']['jaccard']:.3f} | {oracle['mean']['dice']:.3f} | {missed} | "
            f"{summary['wall_seconds'] / 60:.0f} | {_macs(run):.2f} |")


def _test(hanet: Path, other: Path) -> dict:
    rows_a = read_per_image_csv(hanet / "eval_test.csv")
    rows_b = read_per_image_csv(other / "eval_test.csv")
    stems, a, b, _ = compare.paired_scores(rows_a, rows_b, "dice", "fixed")
    groups, _ = compare.group_of_stems(stems, rows_a, rows_b, "auto")
    return compare.compare_scores(a, b, groups=groups)


def table(workdir: Path, dataset: str) -> str | None:
    runs = {name: workdir / dataset / name for name in ARCHITECTURES
            if (workdir / dataset / name / "eval_test.json").is_file()}
    if not runs:
        return None
    lines = ["| network | Dice, fixed [95% CI] | Jaccard, fixed | Dice, oracle | missed (Dice < 0.1) "
             "| training min | GMACs / image |", "|---|---|---|---|---|---|---|"]
    lines += [_row(name, run) for name, run in runs.items()]
    if "hanet" in runs:
        lines += ["", "HA-Net against each baseline (fixed protocol, test Dice; Wilcoxon signed-rank "
                  "on per-group means, two-sided):", ""]
        for name, run in runs.items():
            if name == "hanet":
                continue
            r = _test(runs["hanet"], run)
            lines.append(f"- {NAMES[name]}: mean Dice {r['mean_b']:.3f} vs HA-Net {r['mean_a']:.3f}; "
                         f"median group difference {r['median_diff']:+.3f}; p = {r['p_value']:.3g} over "
                         f"{r['n_groups']} groups ({r['n_pairs']} images; per image, for contrast "
                         f"only: p = {r['per_image']['p_value']:.3g})")
    paper = PAPER_DICE[dataset]["hanet"]
    lines += ["", f"The paper reports HA-Net at Dice {paper} on {dataset.upper()} under its oracle "
              "protocol, on test images that are copies of training images.", "",
              f"Written by `python scripts/compare_table.py --workdir {workdir}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = COMMAND.parse(argv)
    workdir = Path(args.workdir)
    for dataset in DATASETS:
        text = table(workdir, dataset)
        if text is None:
            print(f"{dataset}: no finished run under {workdir / dataset}", file=sys.stderr)
            continue
        print(f"## {dataset.upper()}\n\n{text}\n")
        if args.doc:
            results_table.write_doc(Path(args.doc), text, f"<!-- compare:{dataset}:begin -->",
                                    f"<!-- compare:{dataset}:end -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
