r"""UDIAT (Dataset B), the HA-Net release's recipe plus the recipe search's changes, on the authors' processed
layout.

    python train.py --config=configs/udiat.py --workdir=/tmp/hanet_udiat \
        --config.data.root=DATA_ROOT/UDIAT

The release's training: 256x256 inputs, global batch 32 (the release's code; the paper says
10: add --config.batch_size=10), Adam lr 1e-3 eps 1e-9, ReduceLROnPlateau on val_loss (factor
0.25, patience 4, min_delta 1e-4 absolute, min_lr 1e-9), EarlyStopping (patience 9, min_delta
1e-3, best weights kept), at most 155 epochs, random horizontal flips, BCE + batch Jaccard.
By default (recipes.BEYOND_RELEASE, what the recipe search of docs/results.md kept): a cosine learning rate
over the run instead of the plateau, affine and brightness/contrast augmentation, and BCE +
per-image Dice as the loss. The release's exact recipe is
--config=configs/udiat.py:release (and :release,cpu2h at the CPU budget).

Validation: a leak-free 20% split by default: images are grouped by content joined with the
release's copy numbering (files 361..2700 are 18 rotated/flipped/cropped copies of originals
1..130, which correlation alone cannot see), and each group lands on one side. The release's
own split, the first 20% of the files in sorted name order, is --config.data.val_split=release.

Within two hours on a 2-core CPU (128x128, batch 16, 20 epochs; see recipes.CPU_2H):
--config=configs/udiat.py:cpu2h, as scripts/reproduce.sh does (which also holds out a grouped
20% test set first: --config.data.test_fraction=0.2).

Variants (the paper's ablation): --config.model.variant=no_tam | no_tam_no_sfeb | baseline.
"""

from hanet_jax.train import recipes


def get_config(profile: str | None = None):
    """`--config=configs/udiat.py` is the release's recipe plus recipes.BEYOND_RELEASE;
    `configs/udiat.py:cpu2h` the two-hour CPU budget of scripts/reproduce.sh (recipes.CPU_2H);
    `:release` the release's exact recipe; profiles combine: `:release,cpu2h`."""
    return recipes.dataset_recipe("udiat", profile)
