r"""Go past the release's recipe, on validation data only: train a few recipe arms on the same
grouped split at a short budget and compare them on the validation images.

    python scripts/recipe_search.py --dataset busi --data_root DATA_ROOT \
        --out workdirs/recipe_busi [--budget 96px_8ep] [--doc [PATH]]
    python scripts/recipe_search.py --study variants ...   # the paper's four-variant ablation
    python scripts/recipe_search.py --study spend --budget cpu2h ...  # image size, deep supervision

`--study recipe` (the default) runs cumulative arms, each adding one change to the arm above.
`--study variants` runs the paper's ablation: the recipe's last arm (the default recipe) with
each of the four model variants, each compared with the full model.
`--study spend` (with `--budget cpu2h`, the reproduce runs' profile) asks how to spend the
two-hour CPU budget: the default recipe at 128, 160 and 192 px, with deep supervision (at 160 and
at 128 px), and at 128 px for 30 epochs (160 px's compute spent on epochs).
`--study weights --dataset joint` trains configs/joint.py (DATA_ROOT/BUSI and DATA_ROOT/UDIAT)
with the sources' sampling weights of each arm; its table adds each source's validation Dice.

Each arm is `train.py --config=configs/<dataset>.py:release` (the release's exact recipe) plus
the budget's and the arm's overrides,
with the same `data.test_fraction=0.2` as scripts/reproduce.sh, so the held-out test images of
the reproduce runs are never touched here. Each arm's best checkpoint is then scored on the
validation split with `eval.py --run_split val --protocol fixed` at the default threshold 0.5
(no threshold is tuned, so arms are compared on equal terms). Arms already finished in OUT are
not rerun; an interrupted arm resumes. DATA_ROOT holds the authors' processed release
(`BUSI/train/images`, ...). The table goes to OUT/recipe_search.md and, with --doc, between
the `<!-- recipe:begin -->` and `<!-- recipe:end -->` markers (`<!-- variants:begin -->` and
`<!-- variants:end -->` for the ablation) of docs/results.md, or of the PATH given; never the
README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import results_table  # beside this script (Python imports from a script's own folder): the marker writer
from absl import flags

import numpy as np

from hanet_jax import command_line
from hanet_jax.eval.bootstrap import bootstrap_ci, n_groups
from hanet_jax.eval.metrics import read_per_image_csv
from hanet_jax.models.hanet import VARIANTS
from hanet_jax.train import recipes

ROOT = Path(__file__).resolve().parents[1]

BUDGETS = {
    # ~12-13 images/s at 96x96 on the 2-core CPU: 21-29 min per arm on BUSI's 1,590 images.
    "96px_8ep": {"model.image_size": 96, "batch_size": 16, "num_epochs": 8,
                 "log_every_steps": 20},
    # the profile scripts/reproduce.sh trains (configs/<dataset>.py:cpu2h)
    "cpu2h": dict(recipes.CPU_2H),
}
# Cumulative: each arm adds one change to the one before it.
ARMS = {
    "release": {},
    "+cosine": {"optimizer.schedule": "cosine"},
    "+augment": {"optimizer.schedule": "cosine", "data.augment.affine": True,
                 "data.augment.brightness_contrast": True},
    "+bce_dice": {"optimizer.schedule": "cosine", "data.augment.affine": True,
                  "data.augment.brightness_contrast": True, "loss": "bce_dice"},
}
# The ablation: the recipe's last arm (configs' default) with each model variant.
VARIANT_ARMS = {v: {**ARMS["+bce_dice"], "model.variant": v} for v in VARIANTS}
# How to spend the two-hour budget (run with --budget cpu2h): the default recipe at the
# profile's 128 px, at larger inputs (the bottleneck grows from 4x4 to 5x5 or 6x6 positions for
# the TAM to attend over), with deep supervision, and with more epochs instead of pixels; each
# compared with the first arm.
SPEND_ARMS = {"128px": dict(recipes.BEYOND_RELEASE),
              "160px": {**recipes.BEYOND_RELEASE, "model.image_size": 160},
              "160px+deep_supervision": {**recipes.BEYOND_RELEASE, "model.image_size": 160,
                                         "model.deep_supervision": True},
              # 160 px tied with 128 px on BUSI (docs/results.md): deep supervision at 128 px
              "128px+deep_supervision": {**recipes.BEYOND_RELEASE,
                                         "model.deep_supervision": True},
              "192px": {**recipes.BEYOND_RELEASE, "model.image_size": 192},
              # the compute of 160 px (1.56x) spent on epochs instead of pixels
              "128px_30ep": {**recipes.BEYOND_RELEASE, "num_epochs": 30}}
# The sources' sampling weights of a joint run (--dataset joint): equal draws from each (the
# default), and BUSI weighted by its 3.2 times as many originals (402 groups to UDIAT's 125).
WEIGHT_ARMS = {"equal": dict(recipes.BEYOND_RELEASE),
               "busi_x3.2": {**recipes.BEYOND_RELEASE, "data.sources.busi.weight": 3.2}}
# study -> (arms, cumulative, docs/results.md markers)
STUDIES = {"recipe": (ARMS, True, ("<!-- recipe:begin -->", "<!-- recipe:end -->")),
           "variants": (VARIANT_ARMS, False, ("<!-- variants:begin -->", "<!-- variants:end -->")),
           "spend": (SPEND_ARMS, False, ("<!-- spend:begin -->", "<!-- spend:end -->")),
           "weights": (WEIGHT_ARMS, False, ("<!-- weights:begin -->", "<!-- weights:end -->"))}
JOINT_SOURCES = ("busi", "udiat")  # configs/joint.py's sources, each DATA_ROOT/<NAME>


def _overrides(values: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in values.items()]


def _data_flags(dataset: str, data_root: Path) -> list[str]:
    if dataset == "joint":
        return [f"--config.data.sources.{n}.root={data_root / n.upper()}" for n in JOINT_SOURCES]
    return [f"--config.data.root={data_root / dataset.upper()}"]


def _val_eval(workdir: Path, name: str = "", *source: str) -> tuple[dict, Path]:
    """eval.py on the run's validation images at 0.5: (its report, its per-image CSV)."""
    out, per_image = workdir / f"eval_val{name}.json", workdir / f"eval_val{name}.csv"
    trained = (workdir / "summary.json").stat().st_mtime
    if not out.exists() or out.stat().st_mtime < trained:  # none yet, or of an earlier training
        subprocess.run([sys.executable, "eval.py", "--checkpoint", str(workdir), "--run_split",
                        "val", "--protocol", "fixed", "--out", str(out), "--per_image",
                        str(per_image), *source], cwd=ROOT, check=True)
    return json.loads(out.read_text()), per_image


def _pooled(reports: dict[str, tuple[dict, Path]]) -> dict:
    """The sources' validation images together, as eval.py would report them: mean Dice and
    Jaccard over every image, the CI resampling every source's near-duplicate groups (eval.py
    scores one source at a time: the sources' stems may coincide)."""
    dice, jaccard, groups = [], [], []
    for name, (_, csv) in reports.items():
        for row in read_per_image_csv(csv):
            if row["protocol"] == "fixed":
                dice.append(row["dice"])
                jaccard.append(row["jaccard"])
                groups.append(f"{name}:{row.get('group') or row['stem']}")
    return {"protocols": {"fixed": {"mean": {"dice": float(np.nanmean(dice)),
                                             "jaccard": float(np.nanmean(jaccard))},
                                    "ci95": {"dice": list(bootstrap_ci(dice, groups=groups))}}},
            "n_images": len(dice),
            "bootstrap": {"over": "near-duplicate groups", "n_groups": n_groups(groups)}}


def run_arm(dataset: str, data_root: Path, workdir: Path, budget: dict, arm: dict) -> dict:
    """Trains the arm (unless its training has ended) and scores it on its validation images;
    a joint run also on each source's (`eval.py --source`)."""
    if not (workdir / "summary.json").exists():  # written once training has ended
        subprocess.run([sys.executable, "train.py", f"--config=configs/{dataset}.py:release",
                        f"--workdir={workdir}", *_data_flags(dataset, data_root),
                        "--config.data.test_fraction=0.2", *_overrides({**budget, **arm})],
                       cwd=ROOT, check=True)
        if not (workdir / "summary.json").exists():
            raise SystemExit(f"{workdir}: training stopped before its end; rerun to resume")
    by_source = {}
    if dataset == "joint":
        reports = {n: _val_eval(workdir, f"_{n}", "--source", n) for n in JOINT_SOURCES}
        by_source = {n: r["protocols"]["fixed"]["mean"]["dice"] for n, (r, _) in reports.items()}
        report = _pooled(reports)
    else:
        report, _ = _val_eval(workdir)
    summary = json.loads((workdir / "summary.json").read_text())
    fixed = report["protocols"]["fixed"]
    return {"dice": fixed["mean"]["dice"], "ci": fixed["ci95"]["dice"],
            "jaccard": fixed["mean"]["jaccard"], "n": report["n_images"],
            "ci_over": report.get("bootstrap", {}).get("over", "images"),
            "n_groups": report.get("bootstrap", {}).get("n_groups"), "by_source": by_source,
            "best_val_loss": summary["best_val_loss"], "minutes": summary["wall_seconds"] / 60}


def table(dataset: str, budget_name: str, results: dict[str, dict], command: str,
          study: str = "recipe") -> str:
    """Cumulative studies show each arm's change and Δ from the arm above; the others show
    both from the first arm."""
    arms, cumulative, _ = STUDIES[study]
    than = "the arm above" if cumulative else "the first arm"
    lines = [f"| {dataset.upper()} arm ({budget_name}) | changes from {than} | val Dice "
             f"@0.5 [95% CI] | val Jaccard | Δ Dice | best val loss | train min |",
             "|---|---|---|---|---|---|---|"]
    previous, before = None, {}
    for name, r in results.items():
        arm = arms[name]
        changed = ({k: v for k, v in arm.items() if before.get(k) != v} if previous is not None
                   else {}) or {"—": ""}
        delta = "" if previous is None else f"{r['dice'] - previous:+.3f}"
        per = "".join(f" {n.upper()} {d:.3f}" for n, d in (r.get("by_source") or {}).items())
        lines.append(f"| {name} | {', '.join(f'{k}={v}' if v != '' else k for k, v in changed.items())}"
                     f" | {r['dice']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
                     f"{f' ({per.strip()})' if per else ''} | "
                     f"{r['jaccard']:.3f} | {delta} | {r['best_val_loss']:.4f} | {r['minutes']:.0f} |")
        if cumulative or previous is None:
            previous, before = r["dice"], arm
    first = next(iter(results.values()))
    unit = (f"the {first['n_groups']} near-duplicate groups" if first.get("n_groups")
            else first.get("ci_over", "images"))
    return "\n".join(lines + ["", f"Scored on the {first['n']} validation images of the grouped "
                                  f"split (the test images are held out); intervals resample {unit}. "
                                  "The validation loss is each arm's own loss (not comparable "
                                  "across losses); training minutes include other work that "
                                  f"shared the machine. Written by `{command}`."])


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("dataset", None, ["busi", "udiat", "joint"], "the dataset (joint: "
                      "configs/joint.py, BUSI and UDIAT)", flag_values=fv, required=True)
    flags.DEFINE_string("data_root", None, "folder holding <DATASET>/train/ (joint: BUSI/ and "
                        "UDIAT/)", flag_values=fv, required=True)
    flags.DEFINE_string("out", None, "folder for the arms' workdirs and the table", flag_values=fv,
                        required=True)
    flags.DEFINE_enum("budget", "96px_8ep", sorted(BUDGETS), "each arm's budget", flag_values=fv)
    flags.DEFINE_enum("study", "recipe", sorted(STUDIES), "which study", flag_values=fv)
    flags.DEFINE_list("arms", None, "a subset of the study's arms, in order, comma-separated "
                      f"(recipe: {','.join(ARMS)}; variants: {','.join(VARIANT_ARMS)})", flag_values=fv)
    results_table.define_doc_flag(fv)


COMMAND = command_line.Command("python scripts/recipe_search.py", __doc__, _define_flags)


def main(argv=None) -> int:
    args = COMMAND.parse(argv)
    arms, _, (begin, end) = STUDIES[args.study]
    unknown = [a for a in args.arms or () if a not in arms]
    if unknown:
        COMMAND.usage_error(f"--arms {' '.join(unknown)}: not arms of --study {args.study} ({' '.join(arms)})")
    if (args.study == "weights") != (args.dataset == "joint"):
        COMMAND.usage_error("--study weights needs --dataset joint, and --dataset joint that study")
    if args.study == "spend" and args.budget != "cpu2h":
        COMMAND.usage_error("--study spend compares image sizes at the reproduce runs' budget: "
                            "give --budget cpu2h")
    data_root = Path(args.data_root)
    for name in JOINT_SOURCES if args.dataset == "joint" else (args.dataset,):
        folder = data_root / name.upper()
        if not (folder / "train" / "images").is_dir():
            COMMAND.usage_error(f"{folder}/train/images does not exist (--data_root must hold "
                                f"{name.upper()}/train/)")
    out = Path(args.out)
    results = {}
    for name in args.arms or arms:
        workdir = out / name.lstrip("+")
        results[name] = run_arm(args.dataset, data_root, workdir, BUDGETS[args.budget], arms[name])
        print(f"{name}: val Dice {results[name]['dice']:.4f}", flush=True)
    command = "python scripts/recipe_search.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(args.dataset, args.budget, results, command, args.study)
    (out / "recipe_search.md").write_text(text + "\n")
    if args.doc:
        try:
            results_table.write_doc(Path(args.doc), text, begin, end)
        except (results_table.ResultsError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
