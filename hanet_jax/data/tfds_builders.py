"""TFDS builders for the three layouts, reading a manual download through ``layouts``.

    builder = HanetProcessed(config="busi", data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/data/hanet-processed"))
    train = builder.as_dataset(split="train")

Prepared data (original image size, PNG-encoded) is cached under ``data_dir`` and later
``download_and_prepare`` calls reuse it. Every split is validated with ``check.require_valid``
before anything is written, so a broken folder fails with the full list of problems.
Features: ``image`` uint8 (H, W, 3), ``mask`` uint8 0/1 (H, W, 1), ``stem``, ``label``
(BUSI class; "" where the layout has none).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from collections.abc import Sequence

import numpy as np
from etils import epath

try:
    import tensorflow_datasets as tfds
except ImportError as e:  # TensorFlow is optional; this module alone needs it
    raise ImportError("hanet_jax.data.tfds_builders needs TensorFlow and tensorflow-datasets: "
                      "pip install 'hanet-jax[tf]'") from e

from hanet_jax import storage
from hanet_jax.data import check, layouts, pipeline
from hanet_jax.tensorflow_cpu import tensorflow

tf = tensorflow()  # the CPU alone: a GPU or TPU stays JAX's

_CITATION_BUSI = """@article{aldhabyani2020busi, title={Dataset of breast ultrasound images},
author={Al-Dhabyani, Walid and Gomaa, Mohammed and Khaled, Hussien and Fahmy, Aly},
journal={Data in Brief}, volume={28}, pages={104863}, year={2020}}"""
_CITATION_UDIAT = """@article{yap2018udiat, title={Automated breast ultrasound lesions detection
using convolutional neural networks}, author={Yap, Moi Hoon and others}, journal={IEEE Journal
of Biomedical and Health Informatics}, volume={22}, number={4}, pages={1218--1226}, year={2018}}"""


@dataclasses.dataclass
class HanetConfig(tfds.core.BuilderConfig):
    """``subdir``: folder under manual_dir to read, when present (else manual_dir itself)."""
    subdir: str | None = None
    include_normal: bool = False


class _LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body: one TFDS split per split of the layout."""
    LAYOUT = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    CITATION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10's own version imports `importlib_resources`, which it only declares as a
        # dependency for Python < 3.9; the plain file path is all it needs.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8,
                                             encoding_format="png"),
                "mask": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                            encoding_format="png"),
                "stem": tfds.features.Text(),
                "label": tfds.features.Text(),
            }),
            supervised_keys=("image", "mask"),
            citation=self.CITATION,
        )

    def _root(self, dl_manager) -> str:
        root = os.fspath(dl_manager.manual_dir)
        subdir = self.builder_config.subdir
        if subdir and os.path.isdir(os.path.join(root, subdir)):
            return os.path.join(root, subdir)
        return root

    def _splits(self, root: str) -> list[str]:
        del root
        return ["train"]  # busi/udiat ship without splits

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        generators = {}
        for split in self._splits(root):
            examples = check.require_valid(root, self.LAYOUT, split,
                                           include_normal=self.builder_config.include_normal)
            generators[split] = self._generate_examples(examples)
        return generators

    def _generate_examples(self, examples: Sequence[layouts.Example]):
        for example in examples:
            image = layouts.read_image(example.image_path)
            mask = layouts.read_mask(example.mask_paths)
            if mask.shape != image.shape[:2]:
                raise layouts.DatasetError(f"{example.mask_paths[0]}: mask size differs from image "
                                           f"{example.image_path}")
            yield example.stem, {"image": image, "mask": mask[..., None].astype(np.uint8),
                                 "stem": example.stem, "label": example.label or ""}


class HanetProcessed(_LayoutBuilder):
    """The HA-Net authors' release: ``<split>/images`` + ``<split>/masks`` (or images/masks)."""
    LAYOUT = "processed"
    BUILDER_CONFIGS = [
        HanetConfig(name="busi", subdir="BUSI", description="BUSI from the HA-Net release."),
        HanetConfig(name="udiat", subdir="UDIAT", description="UDIAT from the HA-Net release."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point manual_dir at the release folder that holds BUSI/ and UDIAT/ (or directly at one
    dataset folder): <DATASET>/<split>/images/<stem>.<ext> with masks of the same stem in
    <DATASET>/<split>/masks/ or <DATASET>/<split>/images/masks/. Every split folder found
    becomes a TFDS split."""

    def _splits(self, root: str) -> list[str]:
        splits = sorted(name for name in os.listdir(root)
                        if os.path.isdir(os.path.join(root, name, "images")))
        if not splits:
            raise layouts.DatasetError(f"{root}: no <split>/images folder found")
        return splits


class HanetBusi(_LayoutBuilder):
    """BUSI as distributed on Kaggle ("Dataset_BUSI_with_GT"); one split, ``train``."""
    LAYOUT = "busi"
    CITATION = _CITATION_BUSI
    BUILDER_CONFIGS = [
        HanetConfig(name="lesions", description="benign and malignant images"),
        HanetConfig(name="with_normal", include_normal=True,
                    description="benign, malignant and normal (empty masks)"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point manual_dir at Dataset_BUSI_with_GT/, the folder holding benign/, malignant/ and
    normal/ ("<class> (N).png" with "<class> (N)_mask*.png")."""


class HanetUdiat(_LayoutBuilder):
    """UDIAT "Dataset B" as distributed by its authors; one split, ``train``."""
    LAYOUT = "udiat"
    CITATION = _CITATION_UDIAT
    BUILDER_CONFIGS = [HanetConfig(name="dataset_b", description="UDIAT Dataset B")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point manual_dir at the folder holding original/ and GT/ (NNNNNN.png in each)."""


def decoded_from_tfds(dataset: tf.data.Dataset, image_size: int | Sequence[int]
                      ) -> pipeline.DecodedDataset:
    """Decodes a prepared split (``builder.as_dataset(split=...)``) for ``make_dataset``."""
    images, masks, stems = [], [], []
    for record in tfds.as_numpy(dataset):
        image, mask = pipeline.resize_pair(record["image"], record["mask"][..., 0], image_size)
        images.append(image)
        masks.append(mask)
        stems.append(record["stem"].decode())
    if not images:
        raise layouts.DatasetError("decoded_from_tfds: the split is empty")
    # TFDS stores records in hashed-key order; restore the layouts' natural order of stems.
    order = sorted(range(len(stems)), key=lambda i: layouts.natural_key(stems[i]))
    return pipeline.DecodedDataset(np.stack(images)[order], np.stack(masks)[order],
                                   tuple(stems[i] for i in order))


# The builders above, by their registered TFDS names; a config names one as "name/config".
BUILDERS = {"hanet_processed": HanetProcessed, "hanet_busi": HanetBusi, "hanet_udiat": HanetUdiat}
# processed-layout folder names that keep the release's class rule (layouts, eval)
_RELEASE_FOLDERS = {"hanet_processed/busi": "BUSI", "hanet_processed/udiat": "UDIAT"}
_MATERIALISED: dict[tuple[str, str, str], dict] = {}


def resolve_data_dir(data_dir: str | None) -> str | None:
    """`data_dir` as TFDS needs it: `~` expanded and a local path made absolute (TFDS does
    neither); a bucket URI as given; empty: None (TFDS's default)."""
    return storage.text(data_dir) if data_dir else None


def prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """Our builder `name` ("hanet_processed/busi", "hanet_busi/lesions", "hanet_udiat") as
    prepared under `data_dir` (TFDS's default when empty). Raises DatasetError naming the
    builder and the folder when it is unknown or not prepared there (with the versions that
    are, when another one is)."""
    builder_name, _, config = name.partition("/")
    if builder_name not in BUILDERS:
        raise layouts.DatasetError(f"unknown TFDS builder {builder_name!r} in {name!r}; ours are "
                                   f"{sorted(BUILDERS)} (name/config, e.g. hanet_processed/busi)")
    cls = BUILDERS[builder_name]
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    if config and config not in configs:
        raise layouts.DatasetError(f"{name}: {builder_name} has the configs {configs}")
    builder = cls(config=config or None, data_dir=resolve_data_dir(data_dir))
    if not builder.is_prepared():
        versions = builder.data_path.parent
        found = sorted(v.name for v in versions.iterdir()) if versions.exists() else []
        raise layouts.DatasetError(
            f"{canonical_name(builder)} {builder.version} is not prepared under {builder.data_dir}"
            + (f" (it holds version(s) {found}: prepare it again with this code)" if found else "")
            + f": prepare it once with {cls.__name__}(config=..., data_dir=...)"
            ".download_and_prepare(download_config=tfds.download.DownloadConfig("
            "manual_dir=YOUR_FOLDER)) (docs/data.md, TFDS)")
    return builder


def canonical_name(builder: tfds.core.DatasetBuilder) -> str:
    """"name/config" of a builder, whatever name picked it (a bare name picks the first config)."""
    return f"{builder.name}/{builder.builder_config.name}"


def materialised_folder(name: str, data_dir: str | None, split: str = "train") -> dict:
    """Split `split` of the prepared builder `name` written once per process (removed at exit)
    as a folder of PNGs in the builder's own layout (processed, busi or udiat): {"root",
    "layout", "split", "include_normal"} of it, as config.data and eval's `--run_split` read a
    folder, plus "name" (builder/config), "version", "data_dir" (resolved; "" for TFDS's
    default), "path" (the prepared version's folder) and "sha256" (of the stems and pixels, so a
    run can tell the same data from other data of the same version).

    Why a folder: a TFDS source then goes through the folder path itself (`check.require_valid`,
    `splits.hold_out` with its content fingerprints, `pipeline.decode_examples`), so it holds
    out exactly the images a run on the original folder holds out (the records are the decoded
    pixels, stored and written losslessly), BUSI keeps its class folders, and eval reads it like
    any run's folder. The release's configs are written under BUSI or UDIAT, so their class
    rule applies."""
    key = (name, os.fspath(data_dir or ""), split)
    if key not in _MATERIALISED:
        builder = prepared_builder(name, data_dir)
        full = canonical_name(builder)
        if split not in builder.info.splits:
            raise layouts.DatasetError(
                f"{full} under {builder.data_dir} has no split {split!r}; it has "
                f"{sorted(builder.info.splits)} (whole splits only: the run holds out its own "
                "validation and test images)")
        layout = builder.LAYOUT
        root = os.path.join(storage.scratch_folder("hanet_tfds_"),
                            _RELEASE_FOLDERS.get(full, full.replace("/", "-")))
        # One record at a time (a split at full size does not fit in memory twice over); the
        # digest combines each record's own in stem order, whatever order TFDS reads them in.
        per_stem, labels = {}, set()
        for record in tfds.as_numpy(builder.as_dataset(split=split)):
            stem, label = record["stem"].decode(), record["label"].decode()
            one = hashlib.sha256(record["stem"])
            one.update(record["image"].tobytes())
            one.update(record["mask"].tobytes())
            per_stem[stem] = one.digest()
            labels.add(label)
            layouts.write_example(root, layout, split, stem, record["image"],
                                  record["mask"][..., 0], label)
        digest = hashlib.sha256()
        for stem in sorted(per_stem, key=layouts.natural_key):
            digest.update(per_stem[stem])
        _MATERIALISED[key] = {"root": root, "layout": layout,
                              "split": split if layout == "processed" else "train",
                              "include_normal": layouts.BUSI_NORMAL in labels,
                              "name": full, "version": str(builder.version),
                              "data_dir": resolve_data_dir(data_dir) or "",
                              "path": os.fspath(builder.data_dir),
                              "sha256": digest.hexdigest()}
    return dict(_MATERIALISED[key])
