r"""The generalisation table: BUSI-only, UDIAT-only and joint models, each scored on each dataset's
held-out test set.

    python scripts/cross_table.py --workdir WORKDIR [--doc docs/results.md]

WORKDIR is what `bash scripts/reproduce.sh cross DATA_ROOT WORKDIR` fills: `busi/`, `udiat/` (one
`reproduce.sh <dataset>` run each), `joint/` (configs/joint.py) and `cross/<model>_on_<dataset>`
(`eval.py` reports and per-image CSVs). A cell is the test Dice under the fixed protocol, the
threshold and post-processing chosen on the model's own validation data, with a 95% CI that
resamples the test set's near-duplicate groups. Below the table, the joint model against each
single-dataset model on each test set: the Wilcoxon signed-rank test on per-group means (one
value per original lesion: BUSI's originals appear 5 times and UDIAT's 19 times in the processed
release; `hanet_jax.eval.compare`), with the number of groups and, for contrast only, the
per-image p-value; each model's training wall time; and the joint-against-single arm on
validation (each run's best-epoch validation Dice per dataset, from its summary.json). `--doc`
writes it between `<!-- cross:begin -->` and `<!-- cross:end -->` of that file; without it,
prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from hanet_jax import command_line
from hanet_jax.eval import compare
from hanet_jax.eval.metrics import read_per_image_csv
import results_table  # beside this script: the marker writer

MODELS = {"busi": "BUSI only", "udiat": "UDIAT only", "joint": "joint (BUSI + UDIAT)"}
DATASETS = ("busi", "udiat")


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "a `reproduce.sh cross` WORKDIR", flag_values=fv,
                        required=True)
    results_table.define_doc_flag(fv)


COMMAND = command_line.Command("python scripts/cross_table.py", __doc__, _define_flags)


def _cell(report: Path) -> str:
    if not report.is_file():
        return "–"
    fixed = json.loads(report.read_text())["protocols"]["fixed"]
    low, high = fixed["ci95"]["dice"]
    return f"{fixed['mean']['dice']:.3f} [{low:.3f}, {high:.3f}]"


def _paired(single: Path, joint: Path) -> dict | None:
    if not (single.is_file() and joint.is_file()):
        return None
    rows_a, rows_b = read_per_image_csv(single), read_per_image_csv(joint)
    stems, a, b, _ = compare.paired_scores(rows_a, rows_b, "dice", "fixed")
    groups, _ = compare.group_of_stems(stems, rows_a, rows_b, "auto")
    return compare.compare_scores(a, b, groups=groups)


def _minutes(run: Path) -> str:
    summary = run / "summary.json"
    if not summary.is_file():
        return "–"
    return f"{json.loads(summary.read_text())['wall_seconds'] / 60:.0f}"


def _val_dice(workdir: Path, model: str, dataset: str) -> str:
    """The trainer's validation Dice (threshold 0.5) at `model`'s best epoch, on `dataset`'s
    validation images: a single-dataset run's own, or the joint run's of that source."""
    summary = workdir / model / "summary.json"
    if not summary.is_file():
        return "–"
    s = json.loads(summary.read_text())
    if model == "joint":
        dice = s.get("best_val_dice_by_source", {}).get(dataset)
    else:
        dice = s.get("best_val_dice") if model == dataset else None
    return "–" if dice is None else f"{dice:.3f}"


def table(workdir: Path) -> str:
    cross = workdir / "cross"
    lines = ["| model | BUSI test Dice [95% CI] | UDIAT test Dice [95% CI] | training min |",
             "|---|---|---|---|"]
    for model, name in MODELS.items():
        cells = [_cell(cross / f"{model}_on_{dataset}.json") for dataset in DATASETS]
        lines.append(f"| {name} | {' | '.join(cells)} | {_minutes(workdir / model)} |")
    lines += ["", "Joint against the single-dataset model of each test set (fixed protocol, test "
              "Dice; Wilcoxon signed-rank on per-group means, two-sided):", ""]
    for dataset in DATASETS:
        r = _paired(cross / f"{dataset}_on_{dataset}.csv", cross / f"joint_on_{dataset}.csv")
        if r is None:
            lines.append(f"- {dataset.upper()}: not yet scored")
            continue
        lines.append(f"- {dataset.upper()} test: joint {r['mean_b']:.3f} vs {MODELS[dataset]} "
                     f"{r['mean_a']:.3f}; median group difference {r['median_diff']:+.3f}; "
                     f"p = {r['p_value']:.3g} over {r['n_groups']} groups ({r['n_pairs']} images; "
                     f"per image, for contrast only: p = {r['per_image']['p_value']:.3g})")
    lines += ["", "The arm behind it, on validation images only (the trainer's Dice at 0.5 at "
              "each run's best epoch; a joint run's per source, the same validation images as "
              "the single run's):", "",
              "| model | BUSI val Dice | UDIAT val Dice |", "|---|---|---|"]
    for model in ("busi", "udiat", "joint"):
        cells = [_val_dice(workdir, model, dataset) for dataset in DATASETS]
        lines.append(f"| {MODELS[model]} | {' | '.join(cells)} |")
    lines += ["", f"Written by `python scripts/cross_table.py --workdir {workdir}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = COMMAND.parse(argv)
    text = table(Path(args.workdir))
    print(text)
    if args.doc:
        results_table.write_doc(Path(args.doc), text, "<!-- cross:begin -->",
                                "<!-- cross:end -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
