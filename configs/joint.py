r"""BUSI and UDIAT in one run: the two datasets of the authors' processed release, one stream.

    python train.py --config=configs/joint.py --workdir=/tmp/hanet_joint \
        --config.data.sources.busi.root=DATA_ROOT/BUSI \
        --config.data.sources.udiat.root=DATA_ROOT/UDIAT --config.data.test_fraction=0.2

The recipe of configs/busi.py and configs/udiat.py (the release's plus recipes.BEYOND_RELEASE;
profiles as there: `configs/joint.py:cpu2h` for the two-hour CPU budget, `:release`). Each
source is split exactly as a run of it alone (grouped by content and the release's copy
numbering, the same seed and fractions), so the
joint run holds out the same test and validation images as `configs/busi.py` and
`configs/udiat.py` with the same flags. An epoch draws as many images as the two training sets
hold together, half from each by default (`weight`: UDIAT's fewer originals are then seen more
often); validation pools both sets, and each one's Dice is reported apart
(recipes.get_config's comment on config.data.sources).

A source may also be a pack or a dataset prepared with our TFDS builders (docs/data.md):
    --config.data.sources.busi.source=tfds \
    --config.data.sources.busi.tfds_name=hanet_processed/busi \
    --config.data.sources.busi.tfds_data_dir=TFDS_DIR
"""

from hanet_jax.train import recipes


def get_config(profile: str | None = None):
    config = recipes.dataset_recipe("busi", profile)  # the shared recipe; the sources below
    config.data.sources.busi = recipes.source(release="busi", weight=1.0)
    config.data.sources.udiat = recipes.source(release="udiat", weight=1.0)
    return config
