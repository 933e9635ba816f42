"""The real-data results tables of docs/results.md, written from the outputs of scripts/reproduce.sh.

    python scripts/results_table.py --busi WORKDIR [--udiat WORKDIR] [--doc=docs/results.md]

Reads each WORKDIR's eval_test.json, eval_val.json, summary.json, config.json and
reproduce_times.json (and eval_test.csv, where present, for the count of failed images); for a
cross-validation (HANET_FOLDS; WORKDIR/ensemble.json) the runs' summary.json and config.json
from its members, and the validation row is then the out-of-fold score. Prints
one table per dataset, and with --doc replaces the text between that dataset's
`<!-- results:busi:begin -->` and `<!-- results:busi:end -->` markers (udiat likewise) of
the --doc file (docs/results.md; or another file with the same markers) with it, leaving the other dataset's table as it was: a
reproduce run takes about two hours here, so the two are often rerun apart. No file is written
without --doc, and never the README. Each table names the date of its evaluation outputs.
Nothing in the table is typed by hand except the paper's figures, quoted from the paper (both
measured with the oracle protocol: the README's Evaluation section).

Beside the overall rows, each table has a benign and a malignant row (fixed protocol, test) and
a column of the lesions missed (Dice < 0.1), from the "strata" eval.py writes
(hanet_jax/eval/strata.py); an older eval JSON without them shows "—" there.
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from pathlib import Path

from absl import flags

from hanet_jax import command_line
from hanet_jax.train import recipes
from hanet_jax.inference import ensemble
from hanet_jax.checkpoints.format import CheckpointError  # noqa: E402
from hanet_jax.train.config import flat_json  # noqa: E402
from hanet_jax.eval.metrics import read_per_image_csv  # noqa: E402
from hanet_jax.eval import strata  # noqa: E402


def _network(model: dict) -> str:
    """HA-Net's variant, or a baseline's architecture (configs from before the key: HA-Net)."""
    architecture = model.get("architecture", "hanet")
    return model["variant"] if architecture == "hanet" else architecture


def markers(dataset: str) -> tuple[str, str]:
    return f"<!-- results:{dataset}:begin -->", f"<!-- results:{dataset}:end -->"


PAPER = {"busi": {"dice": 0.9728, "jaccard": 0.9475}, "udiat": {"dice": 0.9238, "jaccard": 0.8671}}
NAMES = {"busi": "BUSI", "udiat": "UDIAT"}


class ResultsError(Exception):
    pass


def _read(workdir: Path, name: str) -> dict:
    path = workdir / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: {e} (run scripts/reproduce.sh to the end first)") from e


def _cell(entry: dict) -> str:
    lo, hi = entry["ci95"]["dice"]
    return (f"{entry['mean']['dice']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{entry['mean']['jaccard']:.3f}")


DASH = "—"
CLASS_ROWS = ("benign", "malignant")


def _strata(entry: dict) -> dict:
    """A protocol entry's strata ({} in eval JSONs written before them)."""
    return entry.get("strata") or {}


def _missed(entry: dict) -> str:
    """The missed-lesions cell of a protocol entry: "2 of 10 (20.0% [10.0, 30.0])", or "—"."""
    lesions = _strata(entry).get("lesions")
    return strata.missed_text(lesions) if lesions else DASH


def class_rows(name: str, fixed: dict) -> list[str]:
    """A benign and a malignant row of the fixed protocol's test figures ("—" where the class
    is unknown, absent or the JSON older than the strata)."""
    rows = []
    for cls in CLASS_ROWS:
        e = _strata(fixed).get("class", {}).get(cls)
        label = f"| {name} | ours, fixed, {cls} lesions |"
        rows.append(f"{label} test, {e['n_lesions']} | {_cell(e)} | {strata.missed_text(e)} |" if e
                    else f"{label} test, {DASH} | {DASH} | {DASH} | {DASH} |")
    return rows


def strata_note(fixed: dict) -> str:
    """Where the class rows come from and the phantom lesions on lesion-free test images."""
    s = _strata(fixed)
    if not s:
        return f" Lesion class and missed lesions: {DASH} (evaluated before eval.py reported them)."
    note = (f" Class rows: from {s['class_source']}." if s.get("class_source")
            else f" Class rows: {DASH}, {s.get('class_unknown', 'lesion class unknown')}.")
    if s.get("lesion_free"):
        note += f" Fixed protocol, test: {strata.lesion_free_text(s['lesion_free'])}."
    return note


def paper_classes_note(dataset: str) -> str:
    """The paper's BUSI test images are release numbers 1..80: their classes by the release's
    numbering (spec: data.md), so a reader sees the headline figure has no malignant lesion."""
    if dataset != "busi":
        return ""
    classes = [strata.busi_release_class(s) for s in strata.PAPER_TEST_STEMS]
    return (f" The paper's {len(classes)} BUSI test images (release numbers 1-{len(classes)}) are "
            f"{classes.count('benign')} benign and {classes.count('malignant')} malignant.")


def _ci_unit(report: dict) -> str:
    boot = report.get("bootstrap", {})
    if boot.get("over") == "near-duplicate groups":
        return f"its {boot['n_groups']} near-duplicate groups (copies of one original together)"
    return "images (copies of one original counted as independent: too narrow)"


def _postprocess_note(fixed: dict) -> str:
    return " and post-processing" if fixed.get("postprocess_source") not in (None, "argument") else ""


def _fixed_setting(fixed: dict) -> str:
    """"threshold 0.25 + largest component from val": what the fixed protocol applied."""
    post = fixed.get("postprocess", "none")
    what = f"threshold {fixed['threshold']:.2f}" + ("" if post == "none" else " + " + post.replace("_", " "))
    return f"{what} from {fixed.get('threshold_source', 'default')}"


FAILED_BELOW = 0.1  # Dice under this: the lesion was not found


def failure_note(workdir: Path) -> str:
    """How many test images the fixed protocol (no TTA) failed on, and why, from eval_test.csv."""
    path = workdir / "eval_test.csv"
    if not path.exists():
        return ""
    try:
        rows = [r for r in read_per_image_csv(path) if r["protocol"] == "fixed"]
    except (OSError, ValueError, KeyError) as e:
        raise ResultsError(f"{path}: {e}") from e
    scored = [r for r in rows if not math.isnan(r["dice"])]
    failed = [r for r in scored if r["dice"] < FAILED_BELOW]
    if not scored or len(failed) == len(scored):
        return ""
    misplaced = sum(r["TP"] == 0 and r["FP"] > 0 for r in failed)
    rest = [r["dice"] for r in scored if r["dice"] >= FAILED_BELOW]
    return (f" Fixed protocol, test: {len(failed)} of {len(scored)} images score Dice < "
            f"{FAILED_BELOW} ({misplaced} with the prediction wholly outside the lesion, "
            f"{len(failed) - misplaced} other); the rest average {sum(rest) / len(rest):.3f}.")


# Keys scripts/reproduce.sh sets itself, from its DATA_ROOT argument and its test split.
SET_BY_REPRODUCE = ("data.root", "data.test_fraction", "data.folds", "data.fold")


def _flag_value(value) -> str:
    if isinstance(value, list):  # tuples come back from JSON as lists
        return "(" + ",".join(map(str, value)) + ")"
    return shlex.quote(str(value))


def reproduce_command(dataset: str, workdir: Path, config: dict, folds: int = 0) -> str:
    """The scripts/reproduce.sh command that trains `config` with today's recipe: every key
    where the run's config.json differs from configs/<dataset>.py:cpu2h (:cpu2h,cv for the
    runs of a `folds`-fold cross-validation) becomes an override, so a row stays reproducible
    after the default recipe moves on."""
    recipe = flat_json(recipes.dataset_recipe(dataset, "cpu2h,cv" if folds else "cpu2h"))
    ran = flat_json(config)
    overrides = [f"--config.{k}={_flag_value(v)}" for k, v in sorted(ran.items())
                 if k in recipe and k not in SET_BY_REPRODUCE and v != recipe[k]]
    root = str(Path(ran["data.root"]).parent) if ran.get("data.root") else "DATA_ROOT"
    return " ".join([*([f"HANET_FOLDS={folds}"] if folds else []), "bash scripts/reproduce.sh",
                     dataset, root, str(workdir), *overrides])


def _runs(workdir: Path) -> list[Path]:
    """The training runs behind WORKDIR: itself, or its ensemble's members."""
    try:
        return [Path(d) for d in ensemble.member_dirs(workdir)]
    except CheckpointError as e:
        raise ResultsError(str(e)) from e


def dataset_rows(dataset: str, workdir: Path) -> tuple[list[str], str]:
    test, val = _read(workdir, "eval_test.json"), _read(workdir, "eval_val.json")
    runs = _runs(workdir)
    summaries = [_read(r, "summary.json") for r in runs]
    config = _read(runs[0], "config.json")
    folds = len(runs) if ensemble.is_ensemble(workdir) else 0
    times = _read(workdir, "reproduce_times.json")
    name, paper = NAMES[dataset], PAPER[dataset]
    ema = config.get("optimizer", {}).get("ema_decay")  # absent in runs from before the key
    epochs = "/".join(str(s["epochs"]) for s in summaries)
    setting = ((f"the mean of a {folds}-fold cross-validation's {folds} runs, each " if folds else "")
               + f"{_network(config['model'])}, {config['model']['image_size']}px, "
               f"batch {config['batch_size']}, {epochs} epochs, "
               f"{config.get('optimizer', {}).get('schedule', 'plateau')} schedule, "
               f"{config.get('loss', 'bce_jaccard')} loss"
               + (f", weights' moving average {ema}" if ema else "")
               + f", seed {config['seed']}")
    fixed = test["protocols"]["fixed"]
    rows = [f"| {name} | paper (oracle; test images also in training) | {DASH} | "
            f"{paper['dice']:.3f} | {paper['jaccard']:.3f} | {DASH} |"]
    for key, label in (("protocols", ""), ("protocols_tta", " + flip TTA")):
        if key not in test:
            continue
        p = test[key]
        rows.append(f"| {name} | ours, paper_oracle{label} | test, {test['n_images']} | "
                    f"{_cell(p['paper_oracle'])} | {_missed(p['paper_oracle'])} |")
        rows.append(f"| {name} | ours, fixed ({_fixed_setting(p['fixed'])}){label} | "
                    f"test, {test['n_images']} | {_cell(p['fixed'])} | {_missed(p['fixed'])} |")
        if key == "protocols":
            rows += class_rows(name, p["fixed"])
    val_label = ("fixed at 0.5, out-of-fold validation (each image by the run that held it out)"
                 if folds else "fixed, validation (guide only)")
    rows.append(f"| {name} | ours, {val_label} | val, {val['n_images']} | "
                f"{_cell(val['protocols']['fixed'])} | {_missed(val['protocols']['fixed'])} |")
    # wall_seconds sums the training over resumed runs; the evaluation ran in the last one.
    eval_min = (times["total_seconds"] - times["train_command_seconds"]) / 60
    wall = sum(s["wall_seconds"] for s in summaries)
    best = "/".join(str(s["best_step"]) for s in summaries)
    note = (f"{name}: {setting}; training {wall / 60:.0f} min (summed over "
            f"{'runs and ' if folds else ''}resumes), evaluation {eval_min:.0f} min; best epoch by "
            f"validation loss at step {best}; fixed threshold{_postprocess_note(fixed)} from "
            f"{fixed.get('threshold_source', 'default')}"
            + (" (out-of-fold)" if folds else "") + f"; test CIs resample {_ci_unit(test)}."
            + failure_note(workdir) + strata_note(fixed) + paper_classes_note(dataset)
            + f" Reproduce: `{reproduce_command(dataset, workdir, config, folds)}`.")
    return rows, note


def _evaluated_on(workdir: Path) -> datetime.date:
    """The UTC date eval.py wrote eval_test.json (its `evaluated_at`; outputs older than that
    field: the file's modification time)."""
    stamp = _read(workdir, "eval_test.json").get("evaluated_at")
    if stamp:
        return datetime.datetime.fromisoformat(stamp).astimezone(datetime.timezone.utc).date()
    return datetime.datetime.fromtimestamp((workdir / "eval_test.json").stat().st_mtime,
                                           datetime.timezone.utc).date()


def table(dataset: str, workdir: Path) -> str:
    """The dataset's table, its note, and the command that wrote it."""
    rows, note = dataset_rows(dataset, workdir)
    evaluated = _evaluated_on(workdir)
    lines = ["| data | model and protocol | scored on, images | Dice [95% CI] | Jaccard | "
             f"missed lesions (Dice < {strata.FOUND_DICE}) [95% CI] |",
             "|---|---|---|---|---|---|", *rows, "", f"- {note}", "",
             f"Written by `python scripts/results_table.py --{dataset} {workdir}` from outputs "
             f"evaluated on {evaluated.isoformat()}."]
    return "\n".join(lines)


def replace_between(content: str, text: str, begin: str, end: str, where: Path) -> str:
    """`content` with what is between its `begin` and `end` markers replaced by `text`."""
    if begin not in content or end not in content:
        raise ResultsError(f"{where}: no {begin} ... {end} markers to write between")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


# Where the generated tables live: in the docs, never in the README.
RESULTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def define_doc_flag(fv: flags.FlagValues) -> None:
    """--doc=PATH: write between PATH's markers (docs/results.md holds them); without it, print only."""
    flags.DEFINE_string("doc", None, f"write the table between this file's markers ({RESULTS_DOC} "
                        "holds them); without --doc, print only", flag_values=fv)


def _define_flags(fv: flags.FlagValues) -> None:
    for dataset in NAMES:
        flags.DEFINE_string(dataset, None, f"a `scripts/reproduce.sh {dataset}` WORKDIR", flag_values=fv)
    define_doc_flag(fv)


COMMAND = command_line.Command("python scripts/results_table.py", __doc__, _define_flags)


def write_doc(doc: Path, text: str, begin: str, end: str) -> None:
    """Replaces what is between the `begin` and `end` markers of `doc` with `text`."""
    doc.write_text(replace_between(doc.read_text(), text, begin, end, doc))


def main(argv=None) -> int:
    args = COMMAND.parse(argv)
    workdirs = {d: Path(getattr(args, d)) for d in NAMES if getattr(args, d) is not None}
    if not workdirs:
        COMMAND.usage_error("give --busi WORKDIR and/or --udiat WORKDIR")
    doc = Path(args.doc) if args.doc else None
    try:
        texts = {dataset: table(dataset, workdir) for dataset, workdir in workdirs.items()}
        if doc:  # every block replaced in memory first: a missing marker writes nothing
            try:
                content = doc.read_text()
            except OSError as e:
                raise ResultsError(f"--doc {doc}: {e}") from e
            for dataset, text in texts.items():
                content = replace_between(content, text, *markers(dataset), doc)
            doc.write_text(content)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n\n".join(texts.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
