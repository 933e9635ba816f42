"""Near-duplicate detection by image content, and the train/test leak audit.

An image's fingerprint is its greyscale content, area-resized to 48x48, lightly smoothed,
zero-mean and unit-norm. Two images are as similar as the best Pearson correlation of their
fingerprints over flips (horizontal, vertical) and small shifts, each shift comparing only the
overlapping region. That catches the copies that leak in the HA-Net release (identical,
flipped, translated, re-encoded, rescaled) while unrelated images stay well below 0.95. It
does not catch rotated or cropped copies (the UDIAT release's augmentations):
`group_ids(group_by="processed_release")` adds the release's own copy numbering for those.

`similarity_matrix` scores all pairs with one matrix product per (flip, shift);
`near_duplicate_pairs` finds the pairs above a threshold among thousands of images in seconds
by ruling out most pairs with an exact bound first.

Command line (exit code 1 when a test image has a near-duplicate in train, 0 when clean):

    python -m hanet_jax.data.audit --train DATA/BUSI/train --test DATA/BUSI/test --json out.json
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from absl import flags
from etils import epath
from PIL import Image
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from hanet_jax import command_line, storage
from hanet_jax.json_files import write_json
from hanet_jax.data import layouts

FINGERPRINT_SIZE = 48
DEFAULT_THRESHOLD = 0.95
DEFAULT_MAX_SHIFT = 2  # pixels at 48x48, i.e. about 4% of the image width
DEFAULT_FLIPS = ("h", "v")  # the BUSI release holds vertically flipped copies too
# Without smoothing, fine speckle makes a half-pixel shift (at 48x48) cost ~0.05 of correlation,
# and visually identical BUSI pairs (calipers added, a few pixels' shift) score 0.87-0.95.
# 0.75 px lifts those above 0.95; unrelated phantoms rise from at most 0.71 to 0.81.
DEFAULT_SMOOTH = 0.75
_FLIP_AXES = {"h": (1,), "v": (0,), "hv": (0, 1)}
_BLOCK = 4096  # images per side of one similarity block (a 64 MiB float32 matrix)

# Copy numbering of the authors' release ("processed" layout), as the data spec describes it.
_BUSI_ORIGINALS = 647  # copies of original i are i + 647k, k = 1..4
_UDIAT_ORIGINALS = 130  # originals 1..130; 361..2700 hold 18 rounds of 130 copies,
_UDIAT_FIRST_COPY = 361  # so copy n is of original (n - 361) % 130 + 1 (checked on the data)
_UDIAT_LAST_COPY = 2700
RELEASES = ("busi", "udiat")
GROUP_BY = ("content", "processed_release")


# ----------------------------------------------------------------------------- fingerprints
def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), RGB or RGBA -> float32 (H, W) luma; alpha is ignored."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    if a.ndim != 2:
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {a.shape}")
    return a.astype(np.float32)


def fingerprint(
    image: np.ndarray, size: int = FINGERPRINT_SIZE, smooth: float = DEFAULT_SMOOTH
) -> np.ndarray:
    """One image -> float32 (size, size): greyscale, area-resized, Gaussian-smoothed with
    std `smooth` fingerprint pixels (0: none), zero-mean, unit-norm."""
    small = np.asarray(
        Image.fromarray(_grey(image)).resize((size, size), Image.Resampling.BOX)
    )
    if smooth > 0:
        small = ndimage.gaussian_filter(small, smooth)
    small = small - small.mean()
    return (small / max(float(np.linalg.norm(small)), 1e-12)).astype(np.float32)


def fingerprints(
    images_or_paths: np.ndarray | Iterable[np.ndarray | str | os.PathLike],
    *,
    size: int = FINGERPRINT_SIZE,
    smooth: float = DEFAULT_SMOOTH,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Fingerprints (N, size, size) of a batch of images, a list of arrays, or image paths.

    Paths are read with `layouts.read_image`, so an unreadable file raises its `DatasetError`.
    With `cache_dir` (paths only), the result is saved there under a key made of the paths,
    their sizes and modification times, and reused while none of them changes.
    """
    items = list(images_or_paths)
    cache = _cache_file(cache_dir, items, size, smooth) if cache_dir is not None else None
    if cache is not None and cache.exists():
        return storage.read_npy(cache)
    out = np.zeros((len(items), size, size), np.float32)
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            item = layouts.read_image(item)
        out[k] = fingerprint(item, size, smooth)
    if cache is not None:  # atomic, so a concurrent reader never sees half a file
        storage.write_npy(cache, out)
    return out


def _cache_file(cache_dir, items, size: int, smooth: float) -> epath.Path:
    if not all(isinstance(p, (str, os.PathLike)) for p in items):
        raise ValueError("fingerprints: cache_dir works with image paths only")
    key = hashlib.sha1(f"fingerprints v1 size={size} smooth={smooth}\n".encode())
    for path in items:
        st = os.stat(path)
        key.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return storage.path(cache_dir) / f"fingerprints-{key.hexdigest()[:20]}.npy"


# ----------------------------------------------------------------------------- similarity
def _flipped(f: np.ndarray, flips: Sequence[str]) -> list[np.ndarray]:
    """f itself, then f flipped as each of `flips` says ("h", "v" or "hv")."""
    unknown = set(flips) - set(_FLIP_AXES)
    if unknown:
        raise ValueError(f"unknown flips {sorted(unknown)}; choose from {sorted(_FLIP_AXES)}")
    return [f] + [np.flip(f, axis=tuple(a + 1 for a in _FLIP_AXES[k])) for k in flips]


def _window(size: int, shift: int) -> slice:
    """Rows (or columns) of an image that overlap its copy moved by `shift`."""
    return slice(max(0, shift), size + min(0, shift))


def _overlap(f: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Rows of zero-mean unit-norm pixels of f (N, S, S) inside the window shifted by (dy, dx)."""
    s = f.shape[-1]
    crop = f[:, _window(s, dy), _window(s, dx)].reshape(len(f), -1)
    crop = crop - crop.mean(axis=1, keepdims=True)
    return crop / np.maximum(np.linalg.norm(crop, axis=1, keepdims=True), 1e-12)


def _shifts(max_shift: int) -> list[tuple[int, int]]:
    """Every (dy, dx) with |dy|, |dx| <= max_shift."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    steps = range(-max_shift, max_shift + 1)
    return [(dy, dx) for dy in steps for dx in steps]


def similarity_matrix(
    fa: np.ndarray,
    fb: np.ndarray | None = None,
    *,
    max_shift: int = DEFAULT_MAX_SHIFT,
    flips: Sequence[str] = DEFAULT_FLIPS,
) -> np.ndarray:
    """Similarity (Na, Nb) of fingerprints fa (Na, S, S) and fb (default fa), in [-1, 1].

    Entry (i, j) is the best correlation of a[i] with b[j] flipped and shifted by up to
    `max_shift` pixels, over the region where the two overlap.
    """
    fa = np.asarray(fa, np.float32)
    fb_variants = _flipped(fa if fb is None else np.asarray(fb, np.float32), flips)
    best = np.full((len(fa), len(fb_variants[0])), -1.0, np.float32)
    # The shifts are symmetric and flips are involutions, so the score is symmetric in a and b.
    for dy, dx in _shifts(max_shift):
        a = _overlap(fa, dy, dx)
        for b in fb_variants:
            np.maximum(best, a @ _overlap(b, -dy, -dx).T, out=best)
    return best


# Finding the pairs above a threshold among thousands of images does not need every score.
# Projecting two normalised windows onto block means (an orthogonal projection P) only shrinks
# their distance, so corr = 1 - |a - b|^2 / 2 <= 1 - (|Pa|^2 + |Pb|^2) / 2 + Pa.Pb. That bound,
# from 8x8 block means (64 numbers instead of 2,304), rules out all but ~0.3% of pairs exactly;
# the survivors get every shift's exact correlation at once from an FFT cross-correlation.
_POOL_BINS = 8


def _tables(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed-area tables (N, S+1, S+1) of f and f**2, for any box sum in four look-ups."""
    out = []
    for x in (f.astype(np.float64), np.square(f, dtype=np.float64)):
        t = np.zeros((len(x), x.shape[1] + 1, x.shape[2] + 1))
        t[:, 1:, 1:] = x.cumsum(axis=1).cumsum(axis=2)
        out.append(t)
    return out[0], out[1]


def _box_sums(table: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sums (N, len(ys) - 1, len(xs) - 1) over the boxes between consecutive edges ys x xs."""
    t = table[:, ys[:, None], xs[None, :]]
    return t[:, 1:, 1:] - t[:, :-1, 1:] - t[:, 1:, :-1] + t[:, :-1, :-1]


def _window_moments(tables, s: int, shifts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel count (K,), sum and sum of squares (N, K) of each image's window per shift."""
    count, total, total_sq = [], [], []
    for dy, dx in shifts:
        r, c = _window(s, dy), _window(s, dx)
        ys, xs = np.array([r.start, r.stop]), np.array([c.start, c.stop])
        count.append((r.stop - r.start) * (c.stop - c.start))
        total.append(_box_sums(tables[0], ys, xs)[:, 0, 0])
        total_sq.append(_box_sums(tables[1], ys, xs)[:, 0, 0])
    return np.array(count, np.float64), np.stack(total, 1), np.stack(total_sq, 1)


def _bound_features(tables, s: int, dy: int, dx: int, *, left: bool) -> np.ndarray:
    """Rows whose dot products are the correlation bound above: (N, 64 + 2), float32.

    P of the normalised window (block sums over sqrt(block size)) comes from the summed-area
    tables; two extra columns carry 1 - |Pa|^2 / 2 (left factor) or -|Pb|^2 / 2 (right factor).
    """
    r, c = _window(s, dy), _window(s, dx)
    count, total, total_sq = _window_moments(tables, s, [(dy, dx)])
    mean = total[:, 0] / count[0]
    norm = np.sqrt(np.maximum(total_sq[:, 0] - total[:, 0] * mean, 1e-24))
    ys = r.start + np.linspace(0, r.stop - r.start, _POOL_BINS + 1).round().astype(int)
    xs = c.start + np.linspace(0, c.stop - c.start, _POOL_BINS + 1).round().astype(int)
    block = np.outer(np.diff(ys), np.diff(xs))
    pooled = _box_sums(tables[0], ys, xs) - mean[:, None, None] * block
    pooled = (pooled / np.sqrt(block) / norm[:, None, None]).reshape(len(mean), -1)
    half_sq = 0.5 * np.square(pooled).sum(axis=1, keepdims=True)
    ones = np.ones_like(half_sq)
    extra = [1 - half_sq, ones] if left else [ones, -half_sq]
    return np.concatenate([pooled, *extra], axis=1).astype(np.float32)


def _pair_scores(fa, fb, i, j, max_shift, flips, chunk: int = 2048) -> np.ndarray:
    """Exact `similarity_matrix` scores of the pairs (fa[i], fb[j]).

    sum_u a[u] b[u - d] over the overlap, for every shift d, is one zero-padded FFT
    cross-correlation per pair; window sums then turn it into the windows' Pearson correlation.
    """
    s = fa.shape[-1]
    size = (s + max_shift,) * 2  # enough padding that shifts up to max_shift never wrap around
    shifts = _shifts(max_shift)
    dys, dxs = np.array(shifts).T
    ua, ia = np.unique(i, return_inverse=True)
    ub, jb = np.unique(j, return_inverse=True)
    a = fa[ua].astype(np.float64)
    count, a1, a2 = _window_moments(_tables(a), s, shifts)
    a_var = a2 - a1**2 / count
    fft_a = np.fft.rfft2(a, s=size)
    best = np.full(len(i), -1.0)
    for b in _flipped(fb[ub].astype(np.float64), flips):
        _, b1, b2 = _window_moments(_tables(b), s, [(-dy, -dx) for dy, dx in shifts])
        b_var = b2 - b1**2 / count
        fft_b = np.conj(np.fft.rfft2(b, s=size))
        for c in range(0, len(i), chunk):
            pa, pb = ia[c : c + chunk], jb[c : c + chunk]
            cross = np.fft.irfft2(fft_a[pa] * fft_b[pb], s=size)[:, dys, dxs]
            cov = cross - a1[pa] * b1[pb] / count
            corr = cov / np.sqrt(np.maximum(a_var[pa] * b_var[pb], 1e-24))
            best[c : c + chunk] = np.maximum(best[c : c + chunk], corr.max(axis=1))
    return best.astype(np.float32)


def _pairs_above(fa, fb, threshold, max_shift, flips, *, upper: bool):
    """(i, j, score) arrays of the pairs of fa x fb scoring >= threshold; `upper` keeps j > i."""
    s, shifts = fa.shape[-1], _shifts(max_shift)
    bound = np.full((len(fa), len(fb)), -np.inf, np.float32)
    ta = _tables(fa)
    lefts = [_bound_features(ta, s, dy, dx, left=True) for dy, dx in shifts]
    for b in _flipped(fb, flips):
        tb = _tables(b)
        for (dy, dx), left in zip(shifts, lefts):
            right = _bound_features(tb, s, -dy, -dx, left=False)
            np.maximum(bound, left @ right.T, out=bound)
    if upper:
        bound[np.tri(len(fa), len(fb), dtype=bool)] = -np.inf
    i, j = np.nonzero(bound >= threshold - 1e-4)  # slack for float32 rounding
    score = _pair_scores(fa, fb, i, j, max_shift, flips)
    keep = score >= threshold
    return i[keep], j[keep], score[keep]


def near_duplicate_pairs(
    fa: np.ndarray,
    fb: np.ndarray | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_shift: int = DEFAULT_MAX_SHIFT,
    flips: Sequence[str] = DEFAULT_FLIPS,
) -> list[tuple[int, int, float]]:
    """(i, j, score) for every pair whose `similarity_matrix` score is at least `threshold`.

    With fb None, pairs within fa with i < j; otherwise pairs between fa[i] and fb[j].
    Sorted by (i, j). Works in blocks of rows and columns, so memory stays bounded.
    """
    symmetric = fb is None
    fa = np.asarray(fa, np.float32)
    fb = fa if symmetric else np.asarray(fb, np.float32)
    pairs = []
    for i0 in range(0, len(fa), _BLOCK):
        for j0 in range(i0 if symmetric else 0, len(fb), _BLOCK):
            i, j, s = _pairs_above(
                fa[i0 : i0 + _BLOCK], fb[j0 : j0 + _BLOCK], threshold, max_shift, flips,
                upper=symmetric and i0 == j0,
            )
            pairs += zip((i + i0).tolist(), (j + j0).tolist(), s.tolist())
    return sorted(pairs)


def best_matches(fa: np.ndarray, fb: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """For each fa[i]: the index of its most similar fb image and that score.

    kwargs go to `similarity_matrix`; fb is scored in blocks, so memory stays bounded.
    """
    idx = np.zeros(len(fa), np.int64)
    score = np.full(len(fa), -np.inf, np.float32)
    for j0 in range(0, len(fb), _BLOCK):
        s = similarity_matrix(fa, fb[j0 : j0 + _BLOCK], **kwargs)
        arg = s.argmax(axis=1)
        top = s[np.arange(len(s)), arg]
        better = top > score
        idx[better], score[better] = j0 + arg[better], top[better]
    return idx, score


# ----------------------------------------------------------------------------- grouping
def connected_components(n: int, pairs: Iterable[Sequence[int]]) -> list[int]:
    """Group ids of n items linked by (i, j, ...) pairs (scipy's connected components).

    Ids are 0, 1, ... in order of each group's first member, so the result is canonical.
    """
    if n == 0:
        return []
    links = np.asarray([(int(p[0]), int(p[1])) for p in pairs], np.int64).reshape(-1, 2)
    graph = sparse.coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    ids: dict[int, int] = {}
    return [ids.setdefault(int(label), len(ids)) for label in labels]


def group_near_duplicates(
    fps: np.ndarray, threshold: float = DEFAULT_THRESHOLD, **kwargs
) -> list[int]:
    """Group id per image: images linked by a chain of near-duplicate pairs share a group."""
    return connected_components(len(fps), near_duplicate_pairs(fps, threshold=threshold, **kwargs))


def release_original(stem: str, release: str) -> str:
    """The original that a file of the authors' release copies, from its number alone.

    BUSI: i + 647k copies original i. UDIAT: 361..2700 are 18 rounds over the 130 originals, so
    n copies (n - 361) % 130 + 1. Any other stem (test files, non-numbers) is its own original.
    """
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; choose from {RELEASES}")
    if not stem.isdigit():
        return stem
    n = int(stem)
    if release == "busi":
        return str((n - 1) % _BUSI_ORIGINALS + 1)
    if _UDIAT_FIRST_COPY <= n <= _UDIAT_LAST_COPY:
        return str((n - _UDIAT_FIRST_COPY) % _UDIAT_ORIGINALS + 1)
    return stem


def release_pairs(stems: Sequence[str], release: str) -> list[tuple[int, int]]:
    """(i, j) pairs linking each file to the first file with the same release original."""
    first: dict[str, int] = {}
    pairs = []
    for i, stem in enumerate(stems):
        j = first.setdefault(release_original(stem, release), i)
        if j != i:
            pairs.append((j, i))
    return pairs


def group_ids(
    stems: Sequence[str],
    fps: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    group_by: str = "content",
    release: str | None = None,
    **kwargs,
) -> list[int]:
    """Group id per image, by content, or by content joined with the release's copy numbering.

    group_by="processed_release" also links every file of the authors' release to its original
    by file number (`release_original`), which catches the rotated and cropped UDIAT copies
    that correlation cannot see. kwargs go to `near_duplicate_pairs`.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown group_by {group_by!r}; choose from {GROUP_BY}")
    pairs = near_duplicate_pairs(fps, threshold=threshold, **kwargs)
    if group_by == "processed_release":
        if release is None:
            raise ValueError(f"group_by='processed_release' needs release= one of {RELEASES}")
        pairs += release_pairs(stems, release)
    return connected_components(len(stems), pairs)


# ----------------------------------------------------------------------------- audit
def audit_fingerprints(
    train_stems: Sequence[str],
    train_fps: np.ndarray,
    test_stems: Sequence[str],
    test_fps: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    group_by: str = "content",
    release: str | None = None,
    **kwargs,
) -> dict:
    """`audit` on fingerprints already computed (see `audit` for the report's keys)."""
    pairs = sorted(
        (
            (test_stems[i], train_stems[j], round(score, 4))
            for i, j, score in near_duplicate_pairs(
                test_fps, train_fps, threshold=threshold, **kwargs
            )
        ),
        key=lambda p: (layouts.natural_key(p[0]), layouts.natural_key(p[1])),
    )
    ids = group_ids(
        train_stems, train_fps, threshold=threshold, group_by=group_by, release=release, **kwargs
    )
    members: dict[int, list[str]] = {}
    for stem, g in zip(train_stems, ids):
        members.setdefault(g, []).append(stem)
    groups = sorted(
        (sorted(m, key=layouts.natural_key) for m in members.values() if len(m) > 1),
        key=lambda m: layouts.natural_key(m[0]),
    )
    return {
        "leaked_test": sorted({p[0] for p in pairs}, key=layouts.natural_key),
        "pairs": [list(p) for p in pairs],
        "groups_within_train": groups,
    }


def audit(
    train_examples: Sequence[layouts.Example],
    test_examples: Sequence[layouts.Example],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    smooth: float = DEFAULT_SMOOTH,
    **kwargs,
) -> dict:
    """Which test images have a near-duplicate in train, and the near-duplicate groups in train.

    Returns {"leaked_test": [test stems], "pairs": [[test stem, train stem, score]],
    "groups_within_train": [[stems] of every group larger than one]}, sorted by stem, with
    scores rounded to 4 decimals. kwargs: group_by, release, max_shift, flips.
    """
    return audit_fingerprints(
        [e.stem for e in train_examples],
        fingerprints([e.image_path for e in train_examples], smooth=smooth),
        [e.stem for e in test_examples],
        fingerprints([e.image_path for e in test_examples], smooth=smooth),
        threshold=threshold,
        **kwargs,
    )


# ----------------------------------------------------------------------------- command line
def _examples(folder: str, layout: str) -> list[layouts.Example]:
    """Processed layout: `folder` is the split folder itself; other layouts: the dataset root."""
    path = Path(folder)
    if layout == "processed":
        return layouts.list_examples(path.parent, layout, path.name)
    return layouts.list_examples(path, layout)


def _size_histogram(groups: list[list[str]]) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[len(g)] = sizes.get(len(g), 0) + 1
    return dict(sorted(sizes.items()))


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("train", None, "train split folder (processed) or dataset root",
                        flag_values=fv, required=True)
    flags.DEFINE_string("test", None,
                        "test split folder or dataset root; omit for train groups only", flag_values=fv)
    flags.DEFINE_string("json", None, "where to write the report", flag_values=fv, required=True)
    flags.DEFINE_enum("layout", "processed", ("processed", "busi", "udiat"), "dataset layout",
                      flag_values=fv)
    flags.DEFINE_float("threshold", DEFAULT_THRESHOLD, "near-duplicate similarity", flag_values=fv)
    flags.DEFINE_float("smooth", DEFAULT_SMOOTH,
                       "fingerprint smoothing, std in 48x48 pixels; 0 = raw correlation", flag_values=fv)
    flags.DEFINE_enum("group_by", "content", GROUP_BY,
                      "processed_release: also group the release's copies by their file numbers",
                      flag_values=fv)
    flags.DEFINE_enum("release", None, RELEASES, "numbering for --group_by processed_release",
                      flag_values=fv)
    flags.register_multi_flags_validator(
        ["group_by", "release"], lambda f: f["group_by"] != "processed_release" or f["release"] is not None,
        message="--group_by processed_release needs --release busi|udiat", flag_values=fv)


COMMAND = command_line.Command("python -m hanet_jax.data.audit", __doc__, _define_flags,
                               synopsis="--train=DIR --json=OUT [--test=DIR] [--flag=value ...]")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the audit, writes the JSON report, prints a summary; 1 when a test image leaked."""
    args = COMMAND.parse(argv)
    start = time.perf_counter()
    try:
        train = _examples(args.train, args.layout)
        test = _examples(args.test, args.layout) if args.test else []
        train_fps = fingerprints([e.image_path for e in train], smooth=args.smooth)
        test_fps = fingerprints([e.image_path for e in test], smooth=args.smooth)
    except layouts.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = audit_fingerprints(
        [e.stem for e in train], train_fps, [e.stem for e in test], test_fps,
        threshold=args.threshold, group_by=args.group_by, release=args.release,
    )
    write_json(args.json, report, indent=1)

    groups = report["groups_within_train"]
    grouped = sum(len(g) for g in groups)
    print(f"train: {len(train)} images, {len(train) - grouped + len(groups)} groups; "
          f"{len(groups)} groups of size > 1 (size: count {_size_histogram(groups)})")
    if test:
        _, best = best_matches(test_fps, train_fps)
        print(f"test: {len(test)} images, {len(report['leaked_test'])} with a near-duplicate in "
              f"train (>= {args.threshold}); highest test-train score {best.max():.3f}")
    print(f"report: {args.json} ({time.perf_counter() - start:.1f}s)")
    return 1 if report["leaked_test"] else 0


def run() -> None:
    """The `hanet-audit` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
