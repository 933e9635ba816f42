"""The shared base of every training config: the HA-Net release's recipe, every key documented.

Not a config to launch by itself; `configs/busi.py`, `udiat.py`, `default.py` and `smoke.py`
start from `get_config()` here and change what they need. Every key below exists in every config
(`hanet_jax.train.config.validate_config` checks the values and rejects unknown keys), and any
of them can be overridden on the command line: `--config.optimizer.learning_rate=3e-4`.

Step counts (steps per epoch, total steps) are derived by the trainer from the data and
`batch_size`, never stored here, so overriding `batch_size` or `data.n_train` is always honoured.
"""

import ml_collections

from hanet_jax.train import config as config_utils


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # The network (hanet_jax.models.architectures) and its fields, plus the input size. The
    # defaults are the release's HA-Net; the other values are the paper-only options. A field of
    # another architecture than the chosen one must stay at its default.
    config.model = ml_collections.ConfigDict(dict(
        architecture="hanet",             # hanet | unet | attention_unet | unet_plus_plus (baselines)
        base_filters=0,                   # baselines: first-level width; 0 = the architecture's
                                          # own (unet 64, attention_unet 32, unet_plus_plus 32)
        variant="full",                   # full | no_tam | no_tam_no_sfeb | baseline
        upsampling="nearest",             # nearest (release) | bilinear | transpose (baselines)
        conv_order="conv_relu_bn",        # conv_relu_bn (release) | conv_bn_relu
        sdpa_learned_projections=False,   # paper: learned W_q, W_k, W_v
        tam_merge="sum",                  # sum (release) | concat
        input_normalization="auto",       # auto: imagenet when init_from is an ImageNet encoder
                                          # checkpoint, else none (the release) | none | imagenet
        dropout_rate=0.1,                 # SDPA dropout
        encoder_epsilon=1.001e-5,         # encoder BatchNorm eps (Keras); 1e-5 for torchvision ports
        dtype="float32",                  # compute dtype: float32 | bfloat16 (params stay float32)
        encoder_blocks=(6, 12, 24, 16),   # DenseNet-121's dense layers per block (fewer: tests)
        deep_supervision=False,           # HA-Net: nnU-Net's auxiliary 1x1 heads on the decoder
                                          # stages, trained against the resized mask with
                                          # weights halving per stage; inference: the main head.
                                          # Off: 0.779 on BUSI validation against 0.790
                                          # without it (docs/results.md, the spend arms)
        image_size=256,                   # square input side, a multiple of 32
    ))

    config.data = ml_collections.ConfigDict(dict(
        source="folder",          # folder: a dataset on disk | synthetic: generated phantoms |
                                  # pack: one .npz of a dataset's originals (hanet_jax.data.pack)
                                  # | tfds: a prepared TFDS dataset (needs TensorFlow)
        pack="",                  # source=pack: the .npz `python -m hanet_jax.data.pack` wrote
        # source=tfds: a dataset prepared with our TFDS builders (hanet_jax.data.tfds_builders,
        # docs/data.md), its split `split` held out exactly as the same folder would be
        tfds_name="",             # builder/config: hanet_processed/busi|udiat, hanet_busi/lesions,
                                  # hanet_udiat/dataset_b
        tfds_data_dir="",         # where it was prepared (empty: TFDS's default data_dir)
        feeder="auto",            # host feed of the cached uint8 arrays: auto (tf.data when
                                  # TensorFlow imports, else numpy) | tf.data | numpy (a
                                  # prefetching thread); both give identical batches
        # source=folder
        root="",                  # dataset folder (for layout=processed: the one holding <split>/)
        layout="processed",       # processed | busi | udiat (hanet_jax.data.layouts)
        split="train",            # sub-folder for layout=processed
        include_normal=False,     # busi layout: also read the 'normal' class (empty masks)
        val_split="grouped",      # grouped: near-duplicates kept on one side | release: first
                                  # val_fraction of the files in sorted name order (leaks)
        val_fraction=0.2,
        test_fraction=0.0,        # > 0: first hold out this fraction (whole groups) as a test
                                  # set that training and model selection never see; val_fraction
                                  # then applies to the rest (needs val_split=grouped)
        folds=0,                  # >= 2: k-fold cross-validation of the non-test data instead
        fold=0,                   # of val_fraction; this run validates on fold `fold` (grouped)
        group_by="content",       # grouped split: content | processed_release (content plus
                                  # the release's copy numbering; needs `release`)
        release="",               # busi | udiat, for group_by=processed_release
        # source=synthetic (hanet_jax.data.synthetic.make_split)
        n_train=200,
        n_val=50,
        seed=0,                   # phantoms and the grouped split; training randomness is `seed`
        # Several datasets in one run (configs/joint.py): name -> a source with the fields of
        # SOURCE_FIELDS below, each split with this config's split keys (seed, val_split,
        # val_fraction, test_fraction, folds/fold) exactly as a run of that source alone, so a
        # joint run holds out the same test and validation images. Empty: the one source above.
        # An epoch is as many draws as the sources' training images together; each draw comes
        # from source s with probability weight_s / (sum of weights), without replacement within
        # a pass over a source (a source drawn more often than its size repeats, each repeat
        # augmented differently). Validation pools every source's validation images (so the
        # sources' losses combine weighted by their validation sizes); each source's Dice is
        # also reported (summary.json, TensorBoard epoch/val_dice/<name>).
        sources=ml_collections.ConfigDict(),
        # Online augmentation of training batches, on the device (hanet_jax.data.augment).
        augment=ml_collections.ConfigDict(dict(
            hflip=True,           # the release's only augmentation
            vflip=False,
            affine=False,
            brightness_contrast=False,
            speckle=False,
        )),
    ))

    config.batch_size = 32        # global, over all devices and processes (the paper says 10)
    config.num_epochs = 155       # at most; early stopping usually ends training sooner
    config.loss = "bce_jaccard"   # hanet_jax.train.losses.LOSS_NAMES
    config.seed = 0               # parameters, dropout and the order of training batches

    # Keras Adam + ReduceLROnPlateau + EarlyStopping as in the release (hanet_jax.train.keras_callbacks).
    config.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-3,
        schedule="plateau",       # plateau: the release (ReduceLROnPlateau below) | cosine:
                                  # decay per step to min_lr over num_epochs (plateau off)
        b1=0.9,
        b2=0.999,
        eps=1e-9,
        plateau_factor=0.25,      # lr *= factor after `plateau_patience` epochs without
        plateau_patience=4,       # a val_loss improvement larger than plateau_min_delta
        plateau_min_delta=1e-4,   # absolute
        plateau_cooldown=0,
        min_lr=1e-9,
        early_stopping_patience=9,
        early_stopping_min_delta=1e-3,
        weight_decay=0.0,         # > 0: AdamW's decoupled decay of the conv and dense kernels
                                  # (w -= lr * weight_decay * w per step); 0: none (the release)
        ema_decay=0.0,            # > 0: validate, select and export an exponential moving
                                  # average of the weights (and BatchNorm statistics) with this
                                  # decay per step, warmed up as min(decay, (1+t)/(10+t));
                                  # 0: the live weights (the release)
    ))

    # Start from other weights (a fresh run only; a resumed run continues its own state).
    config.init_from = ""         # an exported/ported checkpoint dir or a training workdir
    config.init_scope = "all"     # all: the whole model | encoder: params/batch_stats["encoder"]

    config.checkpoint = ml_collections.ConfigDict(dict(
        every_steps=0,            # also save every N steps inside an epoch (0: epoch ends only)
        keep_latest=2,            # newest checkpoints kept (resume); two, so a damaged newest
                                  # one still leaves a step to fall back to
        keep_best=1,              # best-by-validation checkpoints kept (restore_best_weights),
                                  # on top of the latest: 2 + 1 when the best is an older step
        async_save=True,          # write checkpoints in a background thread
    ))

    config.log_every_steps = 50   # training scalars and progress lines
    config.profile_steps = ""     # "START,COUNT": a jax.profiler trace of those training steps
                                  # in WORKDIR/profile (TensorBoard's profile tab or Perfetto)
    config.peak_flops = 0.0       # per-device peak FLOP/s for MFU; 0: the device table
                                  # (hanet_jax.train.mfu), or the measured matmul peak on a CPU
    config.num_overlays = 3       # validation overlays written as images each epoch
    return config


# The fields of one of config.data.sources, and their defaults (a source is a folder, as
# config.data.root describes, a pack, as config.data.pack, or a prepared TFDS dataset, as
# config.data.tfds_name).
SOURCE_FIELDS = dict(
    source="folder",          # folder | pack | tfds
    root="",                  # source=folder: the dataset folder
    layout="processed",       # processed | busi | udiat
    split="train",
    include_normal=False,
    group_by="processed_release",
    release="",               # busi | udiat (the release numbering of group_by=processed_release)
    pack="",                  # source=pack: the .npz
    tfds_name="",             # source=tfds: builder/config (e.g. hanet_processed/busi); `split`
    tfds_data_dir="",         # is then the TFDS split, and data_dir where it was prepared
    weight=1.0,               # sampling weight (> 0), relative to the other sources'
)


def source(**fields) -> ml_collections.ConfigDict:
    """One entry of config.data.sources: SOURCE_FIELDS with `fields` changed."""
    unknown = set(fields) - set(SOURCE_FIELDS)
    if unknown:
        raise ValueError(f"unknown source field(s) {sorted(unknown)}; known: {list(SOURCE_FIELDS)}")
    return ml_collections.ConfigDict({**SOURCE_FIELDS, **fields})


# `configs/busi.py:cpu2h`: what scripts/reproduce.sh trains on a 2-core CPU in about two hours
# (measured and explained in the README's results section). Everything not listed stays the
# release's recipe.
CPU_2H = {
    "model.image_size": 128,      # a quarter of the release's pixels
    "batch_size": 16,             # more updates for the same images seen (the release: 32)
    "num_epochs": 20,             # ~1,590 training images per epoch at 4.3-6.3 images/s with
                                  # augmentation on the same 2 cores (README): 5-6 min an epoch
    "log_every_steps": 10,
}
# What configs/busi.py and configs/udiat.py change from the release's recipe by default: the
# changes the recipe search kept (README, "Beyond the release's recipe"; scripts/recipe_search.py).
# The `release` profile undoes them.
BEYOND_RELEASE = {
    # The best arm of the recipe search on BUSI (96px / 8 epochs, cumulative arms; validation
    # Dice per image at 0.5: release 0.718, +cosine 0.721, +augment 0.711, +bce_dice 0.753).
    # The release's plateau never fired in 20 epochs (lr stayed 1e-3 in the BUSI run): cosine
    # anneals instead.
    "optimizer.schedule": "cosine",
    # Kept as part of the best arm; alone it measured -0.010, within noise at that budget.
    "data.augment.affine": True,
    "data.augment.brightness_contrast": True,
    # Per-image Dice weighs a small tumour like a large one (the release's Jaccard is over the
    # whole batch): +0.042, the one clear gain.
    "loss": "bce_dice",
}


# `:cpu2h,cv`: each run of a k-fold cross-validation (scripts/reproduce.sh with HANET_FOLDS=4)
# in about the same two-hour budget: four runs of half the epochs (24-26 min each at 128x128
# here, README: 103 min of training and 7 of evaluation for BUSI).
CV_RUN = {"num_epochs": 10}


# `:cpu2h,compare`: HA-Net and the three baselines at the same recipe (scripts/reproduce.sh
# compare). The baselines cost 2.2 to 8.6 times HA-Net's multiply-accumulates per image
# (docs/baselines.md, Table 6), so the CPU comparison runs all four at 96x96; on an accelerator
# HANET_PROFILE= runs them at the release's 256x256.
COMPARE = {"model.image_size": 96}


PROFILES = {"cpu2h": CPU_2H, "cv": CV_RUN, "compare": COMPARE,
            "release": {k: config_utils.flatten(get_config().to_dict())[k] for k in BEYOND_RELEASE}}


def apply_profile(config: ml_collections.ConfigDict, profile: str | None):
    """`config` with the named profiles' overrides, in order ("release,cpu2h"; None or "":
    unchanged)."""
    for name in filter(None, (profile or "").split(",")):
        if name not in PROFILES:
            raise ValueError(f"unknown config profile {name!r} (after ':' in --config); "
                             f"choose from {sorted(PROFILES)}, comma-separated")
        config.update_from_flattened_dict(PROFILES[name])
    return config


def dataset_recipe(release: str, profile: str | None = None) -> ml_collections.ConfigDict:
    """The recipe for the authors' processed layout of `release` ("busi" | "udiat"): the
    release's, with validation groups from content plus the release's own copy numbering, and
    the BEYOND_RELEASE changes; then `profile` (see PROFILES)."""
    config = get_config()
    config.data.source = "folder"
    config.data.layout = "processed"
    config.data.split = "train"
    config.data.group_by = "processed_release"
    config.data.release = release
    config.update_from_flattened_dict(BEYOND_RELEASE)
    return apply_profile(config, profile)
