"""Train/validation splits: leak-free by near-duplicate group, or the release's file-name split.

The HA-Net release validates on the first 20% of its training files in sorted file-name order.
Its training folders hold each image several times (flipped, shifted, rotated copies), so that
split puts copies of validation images in train. `grouped_split` keeps every group of
near-duplicates (see `audit.group_ids`) on one side instead.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Hashable, Sequence

import numpy as np

from hanet_jax.data import audit, layouts

METHODS = ("grouped", "release")
# What a training run records of its split in its workdir ({"root", "layout", "val": [stems], ...}),
# so that evaluation can score exactly the images the run held out.
DATA_SPLIT_FILE = "data_split.json"


def _check_fraction(val_fraction: float, name: str = "val_fraction") -> None:
    if not 0 < val_fraction < 1:
        raise ValueError(f"{name} must be in (0, 1), got {val_fraction}")


def _group_members(group_ids: Sequence[Hashable]) -> list[list[int]]:
    """The indices of each group, groups in order of first appearance (deterministic)."""
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    return list(members.values())


def _grouped_indices(
    group_ids: Sequence[Hashable], val_fraction: float, seed: int, name: str = "val_fraction"
) -> tuple[list[int], list[int]]:
    """Indices (train, val), ascending: groups in a seeded random order go to val while that
    brings its size closer to val_fraction of the total; each group lands on one side only.
    `name` is the fraction's name in error messages."""
    _check_fraction(val_fraction, name)
    groups = _group_members(group_ids)
    target = val_fraction * len(group_ids)
    in_val = np.zeros(len(group_ids), bool)
    for k in np.random.default_rng(seed).permutation(len(groups)):
        if abs(in_val.sum() + len(groups[k]) - target) < abs(in_val.sum() - target):
            in_val[groups[k]] = True
    if in_val.all() or not in_val.any():
        raise ValueError(
            f"cannot split {len(group_ids)} items in {len(groups)} near-duplicate groups into "
            f"two non-empty sides with {name}={val_fraction}"
        )
    return np.flatnonzero(~in_val).tolist(), np.flatnonzero(in_val).tolist()


def grouped_folds(group_ids: Sequence[Hashable], folds: int, seed: int) -> list[list[int]]:
    """`folds` lists of indices, ascending, that partition the items with each group in one
    fold: groups in a seeded random order, each to the fold with the fewest items so far (ties
    to the lower fold), so the folds' sizes differ by at most one group's size."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    groups = _group_members(group_ids)
    if len(groups) < folds:
        raise ValueError(f"cannot split {len(groups)} near-duplicate groups into {folds} folds")
    out: list[list[int]] = [[] for _ in range(folds)]
    for k in np.random.default_rng(seed).permutation(len(groups)):
        min(out, key=len).extend(groups[k])
    return [sorted(f) for f in out]


def grouped_split(
    stems: Sequence[str],
    group_ids: Sequence[Hashable],
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """(train_stems, val_stems) with each group wholly on one side, in the input order.

    Groups are visited in an order drawn from `seed`; the validation side gets about
    val_fraction of the stems (as close as whole groups allow). Same inputs, same split.
    """
    if len(stems) != len(group_ids):
        raise ValueError(f"{len(stems)} stems but {len(group_ids)} group ids")
    train, val = _grouped_indices(group_ids, val_fraction, seed)
    return [stems[i] for i in train], [stems[i] for i in val]


def content_groups(examples: Sequence[layouts.Example], *, threshold: float = audit.DEFAULT_THRESHOLD,
                   smooth: float = audit.DEFAULT_SMOOTH, group_by: str = "content",
                   release: str | None = None, cache_dir: str | os.PathLike | None = None,
                   seed: int = 0) -> list:
    """Near-duplicate group id of each example (see `split_examples`); `seed` is ignored, so
    that the keyword arguments of the splitters can be passed on as they are."""
    del seed
    fps = audit.fingerprints([e.image_path for e in examples], smooth=smooth, cache_dir=cache_dir)
    return audit.group_ids([e.stem for e in examples], fps, threshold=threshold,
                           group_by=group_by, release=release)


def _given_or_content_groups(group_ids, examples, **grouping) -> Sequence[Hashable]:
    return group_ids if group_ids is not None else content_groups(examples, **grouping)


def release_split(names: Sequence[str], val_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """The release's split: validation is the first int(N * val_fraction) names in Python's
    plain string order ("1.jpg" < "10.jpg" < "100.jpg" < "2.jpg"); train is the rest.

    Both lists come back in that sorted order. Pass file names (with extension) to match the
    release exactly: "1-2.jpg" sorts before "1.jpg", though stem "1" sorts before "1-2".
    """
    _check_fraction(val_fraction)
    ordered = sorted(names)
    n_val = int(len(ordered) * val_fraction)
    return ordered[n_val:], ordered[:n_val]


def split_examples(
    examples: Sequence[layouts.Example],
    *,
    method: str = "grouped",
    val_fraction: float = 0.2,
    seed: int = 0,
    threshold: float = audit.DEFAULT_THRESHOLD,
    smooth: float = audit.DEFAULT_SMOOTH,
    group_by: str = "content",
    release: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    group_ids: Sequence[Hashable] | None = None,
    folds: int = 0,
    fold: int = 0,
) -> tuple[list[layouts.Example], list[layouts.Example]]:
    """(train_examples, val_examples) by `method`, each in the input order.

    With `folds` >= 2 ("grouped" only), validation is fold `fold` of `grouped_folds` instead
    of a `val_fraction` (k-fold cross-validation: the k runs' validation sets partition the
    examples, each image validated by the one run that never trained on it).

    "grouped": near-duplicate groups from the images' content (read with `layouts.read_image`;
    fingerprints cached in `cache_dir` when given), joined with the release's copy numbering
    when group_by="processed_release" (then `release` is "busi" or "udiat"), kept whole.
    "release": the release's sorted file-name split (`release_split`), which leaks.
    `group_ids`: the examples' groups when already computed (`content_groups`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; choose from {METHODS}")
    examples = list(examples)
    if folds and method != "grouped":
        raise ValueError(f"folds need the grouped split, not {method!r}")
    if method == "release":
        names = [os.path.basename(e.image_path) for e in examples]
        val_names = set(release_split(names, val_fraction)[1])
        train = [i for i, n in enumerate(names) if n not in val_names]
        val = [i for i, n in enumerate(names) if n in val_names]
    else:
        ids = _given_or_content_groups(group_ids, examples, smooth=smooth, threshold=threshold,
                                       group_by=group_by, release=release, cache_dir=cache_dir)
        if folds:
            if not 0 <= fold < folds:
                raise ValueError(f"fold must be in [0, {folds}), got {fold}")
            val = grouped_folds(ids, folds, seed)[fold]
            train = sorted(set(range(len(examples))) - set(val))
        else:
            train, val = _grouped_indices(ids, val_fraction, seed)
    return [examples[i] for i in train], [examples[i] for i in val]


# The held-out test side is drawn from its own random stream, so adding it leaves the rest of
# the seeds' meaning alone, and it never depends on val_fraction.
_TEST_STREAM = 1_000_003


def holdout_test(
    examples: Sequence[layouts.Example],
    test_fraction: float,
    *,
    seed: int = 0,
    threshold: float = audit.DEFAULT_THRESHOLD,
    smooth: float = audit.DEFAULT_SMOOTH,
    group_by: str = "content",
    release: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    group_ids: Sequence[Hashable] | None = None,
) -> tuple[list[layouts.Example], list[layouts.Example]]:
    """(rest, test): about `test_fraction` of the examples in whole near-duplicate groups, for a
    test set that neither training nor model selection ever sees (../shared/data has none).
    `group_ids`: the examples' groups when already computed (`content_groups`)."""
    examples = list(examples)
    ids = _given_or_content_groups(group_ids, examples, smooth=smooth, threshold=threshold,
                                   group_by=group_by, release=release, cache_dir=cache_dir)
    rest, test = _grouped_indices(ids, test_fraction, seed + _TEST_STREAM, name="test_fraction")
    return [examples[i] for i in rest], [examples[i] for i in test]


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """What a training run holds out of a folder's examples (`hold_out`), each side in the
    input order."""
    train: list[layouts.Example]
    val: list[layouts.Example]
    test: list[layouts.Example]
    groups: dict[str, Hashable] | None  # stem -> near-duplicate group (grouped split only)


def hold_out(
    examples: Sequence[layouts.Example],
    *,
    val_split: str = "grouped",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: int = 0,
    fold: int = 0,
    seed: int = 0,
    group_by: str = "content",
    release: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    groups: dict[str, Hashable] | None = None,
) -> HeldOut:
    """The split of a training run from a folder (`config.data`'s keys of the same names):
    for the grouped split, near-duplicate groups over all the examples (`content_groups`,
    computed once), then the test side (`holdout_test`, when test_fraction > 0), then
    validation out of the rest (`split_examples`: val_fraction, or fold `fold` of `folds`).

    `train.input` (a folder run) and `data.pack` (which records each original's side) both
    split through here, so a run from a pack holds out the originals a run from the folder
    does. `groups`: stem -> group when already computed (the folds of one pack share them).
    Raises ValueError for a fraction no split of these groups can honour.
    """
    examples = list(examples)
    if test_fraction > 0 and val_split != "grouped":
        raise ValueError("test_fraction needs val_split='grouped' (the release's split leaks "
                         "copies across sides)")
    grouping = dict(seed=seed, group_by=group_by, release=release or None, cache_dir=cache_dir)
    if val_split == "grouped" and groups is None:
        groups = {ex.stem: g for ex, g in zip(examples, content_groups(examples, **grouping))}
    elif val_split != "grouped":
        groups = None

    def group_ids(subset):
        return [groups[ex.stem] for ex in subset] if groups else None

    test: list[layouts.Example] = []
    if test_fraction > 0:
        examples, test = holdout_test(examples, test_fraction, group_ids=group_ids(examples),
                                      **grouping)
    train, val = split_examples(examples, method=val_split, val_fraction=val_fraction,
                                folds=folds, fold=fold, group_ids=group_ids(examples), **grouping)
    return HeldOut(train, val, test, groups)
