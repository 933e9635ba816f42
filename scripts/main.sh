#!/usr/bin/env bash
# The main job, on any machine with Python 3.11 and no downloads:
#   1. train the full HA-Net on synthetic ultrasound phantoms (configs/default.py);
#   2. write a held-out synthetic test split (phantoms the model never saw);
#   3. score the best checkpoint on it with both protocols, with overlays.
# Usage: bash scripts/main.sh [WORKDIR] [--config.KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
set -euo pipefail
WORKDIR="${1:-workdirs/default}"
shift || true

python train.py --config=configs/default.py --workdir="$WORKDIR" "$@"

# The test split uses the training config's image size and data seed, on its own random stream.
read -r SIZE SEED < <(python -c "import json; c = json.load(open('$WORKDIR/config.json')); print(c['model']['image_size'], c['data']['seed'])")
python -m hanet_jax.data.synthetic --out "$WORKDIR/synthetic" --split test --n 64 --size "$SIZE" --seed "$SEED"
python eval.py --checkpoint "$WORKDIR" --data_dir "$WORKDIR/synthetic" --layout processed --split test \
    --protocol both --out "$WORKDIR/eval_test.json" --per_image "$WORKDIR/eval_test.csv" \
    --overlays "$WORKDIR/overlays"
python - "$WORKDIR" <<'PY'
import json, sys
w = sys.argv[1]
s, e = json.load(open(f"{w}/summary.json")), json.load(open(f"{w}/eval_test.json"))
print(f"\ntrained {s['epochs']} epochs in {s['wall_seconds']:.0f} s; best validation Dice {s['best_val_dice']:.3f}")
for name, p in e["protocols"].items():
    print(f"held-out synthetic test ({e['n_images']} images), {name}: Dice {p['mean']['dice']:.3f} "
          f"[{p['ci95']['dice'][0]:.3f}, {p['ci95']['dice'][1]:.3f}], Jaccard {p['mean']['jaccard']:.3f}")
print(f"outputs in {w}/ (summary.json, eval_test.json, overlays/cases_grid.png; tensorboard --logdir {w})")
PY
echo "main job: ${SECONDS} s in all, setup included"
