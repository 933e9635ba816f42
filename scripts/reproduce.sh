#!/usr/bin/env bash
# Train HA-Net on real data with the dataset config's recipe and evaluate it honestly.
#
#   bash scripts/reproduce.sh {busi,udiat} DATA_ROOT WORKDIR [--config.KEY=VALUE ...]
#   bash scripts/reproduce.sh compare DATA_ROOT WORKDIR [--config.KEY=VALUE ...]
#   bash scripts/reproduce.sh cross DATA_ROOT WORKDIR [--config.KEY=VALUE ...]
#
# `cross`: the generalisation table. A BUSI-only and a UDIAT-only run (WORKDIR/busi, WORKDIR/udiat:
# this script's single runs) and a joint one (WORKDIR/joint: configs/joint.py, the same recipe and
# profile, each source holding out the same test and validation images as its single run), each
# trained or reused; each model is scored on each dataset's held-out test set
# (WORKDIR/cross/<model>_on_<dataset>.json and .csv; threshold and post-processing from the
# model's own validation data; the single models before the joint run trains, so a long or
# interrupted joint run does not hold their cells back) and scripts/cross_table.py prints the
# 3x2 table with the paired tests of joint against single.
#
# `compare`: HA-Net, U-Net, Attention U-Net and UNet++ (config.model.architecture) on BUSI and on
# UDIAT, each a run of this script in WORKDIR/<dataset>/<architecture> with the same split, seed,
# epochs, optimiser, augmentation and image size (profile cpu2h,compare: 96x96; HANET_PROFILE= for
# the full recipe at 256x256 on an accelerator); a finished run (its eval_val.json) is skipped,
# an interrupted one resumes. Then scripts/compare_table.py prints the tables and HA-Net's paired
# tests against each baseline.
#
# DATA_ROOT holds BUSI/train/{images,masks} and UDIAT/train/{images,masks} (the processed
# layout of the HA-Net authors' processed release). Steps:
#   1. train from scratch with configs/<dataset>.py:cpu2h (the release's recipe plus the recipe
#      search's changes, common.BEYOND_RELEASE, at 128x128, batch 16, 20 epochs: about two hours on a
#      2-core CPU; HANET_PROFILE=release,cpu2h for the release's exact recipe at that budget,
#      HANET_PROFILE= for the full 256x256 / batch 32 / 155-epoch one), after holding out a
#      grouped 20% test set that neither training nor model selection sees, and a grouped 20%
#      of the rest for validation (early stopping, plateau, checkpoint, threshold);
#   2. score the best checkpoint on the test set: the fixed protocol with the threshold and the
#      post-processing (none, or one component: the largest or the most probable) chosen on
#      validation, the paper's oracle
#      protocol, each also with flip TTA;
#   3. score it on the validation set too (the developer's guide, not the result);
#   4. print the results table (scripts/results_table.py --doc=docs/results.md writes it into the docs).
# Rerunning with the same WORKDIR resumes training. ImageNet weights, where a user has them:
# --config.init_from=DIR --config.init_scope=encoder.
#
# HANET_FOLDS=4: k-fold cross-validation instead of one run, in about the same budget (profile
# cpu2h,cv: runs of 10 epochs; four fit in two hours here). The same test set is held out; the rest is split into k
# grouped folds and run f (WORKDIR/fold_f) validates on fold f. WORKDIR/ensemble.json names the
# k runs, so WORKDIR is one checkpoint for eval.py and predict.py: their average. The test set
# is scored by the average of the k models; the threshold and post-processing are chosen on
# the out-of-fold predictions (each development image predicted by the one run that held it
# out), which are also what eval_val.json scores: the cross-validation estimate.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 3 && "$1" == compare ]]; then
    DATA_ROOT="$2" WORKDIR="$3"
    shift 3
    export HANET_PROFILE="${HANET_PROFILE-cpu2h,compare}"
    for dataset in busi udiat; do
        for arch in hanet unet attention_unet unet_plus_plus; do
            run="$WORKDIR/$dataset/$arch"
            if [[ -f "$run/eval_val.json" ]]; then
                echo "== $run: done"
                continue
            fi
            echo "== $dataset, $arch: $run"
            bash scripts/reproduce.sh "$dataset" "$DATA_ROOT" "$run" \
                --config.model.architecture="$arch" "$@"
        done
    done
    source scripts/setup_env.sh
    python scripts/compare_table.py --workdir "$WORKDIR"
    exit 0
fi
if [[ $# -ge 3 && "$1" == cross ]]; then
    DATA_ROOT="$2" WORKDIR="$3"
    shift 3
    for dataset in busi udiat; do
        if [[ -f "$WORKDIR/$dataset/eval_val.json" ]]; then
            echo "== $WORKDIR/$dataset: done"
        else
            bash scripts/reproduce.sh "$dataset" "$DATA_ROOT" "$WORKDIR/$dataset" "$@"
        fi
    done
    source scripts/setup_env.sh
    set -euo pipefail
    # score MODEL on each test set: the joint run's own images of that source, or the single
    # run's of that dataset; the threshold and post-processing chosen on the model's own
    # validation data. A cell already scored is kept.
    score() {
        local model="$1" dataset out which
        mkdir -p "$WORKDIR/cross"
        for dataset in busi udiat; do
            out="$WORKDIR/cross/${model}_on_${dataset}"
            [[ -f "$out.json" ]] && continue
            if [[ $model == joint ]]; then which=(--source "$dataset")
            else which=(--split_from "$WORKDIR/$dataset"); fi
            python eval.py --checkpoint "$WORKDIR/$model" --run_split test "${which[@]}" \
                --threshold_from_split val --postprocess auto --protocol both \
                --out "$out.json" --per_image "$out.csv"
        done
    }
    score busi  # the single models' cells first: they need not wait for the joint run
    score udiat
    PROFILE="${HANET_PROFILE-cpu2h}"
    if [[ ! -f "$WORKDIR/joint/summary.json" ]]; then  # trains, or resumes an interrupted run
        echo "== joint: $WORKDIR/joint"
        python train.py --config="configs/joint.py${PROFILE:+:$PROFILE}" --workdir="$WORKDIR/joint" \
            --config.data.sources.busi.root="$DATA_ROOT/BUSI" \
            --config.data.sources.udiat.root="$DATA_ROOT/UDIAT" --config.data.test_fraction=0.2 "$@"
    fi
    score joint
    python scripts/cross_table.py --workdir "$WORKDIR"
    exit 0
fi
if [[ $# -lt 3 || ! "$1" =~ ^(busi|udiat)$ ]]; then
    echo "usage: bash scripts/reproduce.sh {busi,udiat,compare,cross} DATA_ROOT WORKDIR [--config.KEY=VALUE ...]" >&2
    exit 2
fi
DATASET="$1" DATA_ROOT="$2" WORKDIR="$3"
shift 3
FOLDER="$DATA_ROOT/${DATASET^^}"
if [[ ! -d "$FOLDER/train/images" ]]; then
    echo "error: $FOLDER/train/images does not exist (DATA_ROOT must hold ${DATASET^^}/train/)" >&2
    exit 2
fi
FOLDS="${HANET_FOLDS:-0}"
if [[ ! "$FOLDS" =~ ^[0-9]+$ || "$FOLDS" == 1 ]]; then
    echo "error: HANET_FOLDS must be 0 (one run) or at least 2, got '$FOLDS'" >&2
    exit 2
fi
if (( FOLDS >= 2 )); then PROFILE="${HANET_PROFILE-cpu2h,cv}"; else PROFILE="${HANET_PROFILE-cpu2h}"; fi

source scripts/setup_env.sh
set -euo pipefail

# train RUN_DIR [--config.KEY=VALUE ...]: one training run, resumed if RUN_DIR holds one.
train() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    touch "$dir/.reproduce_started"
    # After a SIGTERM (a scheduler's preemption) or SIGINT, train.py saves and exits 143 or 130;
    # pass that status on, so a restarting scheduler reruns this same command, which resumes.
    local status=0
    python train.py --config="configs/$DATASET.py${PROFILE:+:$PROFILE}" --workdir="$dir" \
        --config.data.root="$FOLDER" --config.data.test_fraction=0.2 "$@" || status=$?
    if (( status != 0 )); then
        echo "training $dir stopped (exit status $status); run the same command again to resume" >&2
        exit "$status"
    fi
}

start=$(date +%s)
mkdir -p "$WORKDIR"
if (( FOLDS >= 2 )); then
    members=()
    for ((fold = 0; fold < FOLDS; fold++)); do
        echo "== fold $((fold + 1)) of $FOLDS: $WORKDIR/fold_$fold"
        train "$WORKDIR/fold_$fold" --config.data.folds="$FOLDS" --config.data.fold="$fold" "$@"
        members+=("fold_$fold")
    done
    python -m hanet_jax.inference.ensemble write "$WORKDIR" "${members[@]}"
else
    train "$WORKDIR" "$@"
fi
trained=$(date +%s)
python eval.py --checkpoint "$WORKDIR" --run_split test --threshold_from_split val --postprocess auto \
    --protocol both --tta --out "$WORKDIR/eval_test.json" --per_image "$WORKDIR/eval_test.csv" \
    --overlays "$WORKDIR/overlays_test" --overlays_order worst
python eval.py --checkpoint "$WORKDIR" --run_split val --protocol both --tta \
    --out "$WORKDIR/eval_val.json" --per_image "$WORKDIR/eval_val.csv"
end=$(date +%s)
python - "$WORKDIR" "$((trained - start))" "$((end - start))" <<'PY'
import json, sys
w, train_s, total_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
json.dump({"train_command_seconds": train_s, "total_seconds": total_s},
          open(f"{w}/reproduce_times.json", "w"), indent=2)
PY
python scripts/results_table.py "--$DATASET" "$WORKDIR"
