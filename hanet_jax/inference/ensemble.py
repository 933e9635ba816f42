"""Several checkpoints used as one: the average of their probabilities.

A directory holding `ensemble.json` ({"kind": "ensemble", "members": [relative dirs]}) is an
ensemble wherever `--checkpoint DIR` is taken (`eval.py`, `predict.py`); `scripts/reproduce.sh`
writes one over the k runs of a cross-validation (HANET_FOLDS). Each member is an ordinary
checkpoint: an exported one or a training workdir.

Scoring a training split (`eval.py --run_split`), each image is predicted only by the members
that held it out in that split, as each member's `data_split.json` records: for the k runs of a
cross-validation, the test images by all k, and each validation image by the one run that
validated on it (out-of-fold), so no image is ever scored by a model that trained on it.

    python -m hanet_jax.inference.ensemble write DIR MEMBER [MEMBER ...]   # MEMBERs relative to DIR
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np
from etils import epath

from hanet_jax import command_line, storage
from hanet_jax.checkpoints.format import CheckpointError, read_meta
from hanet_jax.json_files import read_json, write_json

ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1


def is_ensemble(directory: str | os.PathLike) -> bool:
    return (storage.path(directory) / ENSEMBLE_FILE).is_file()


def write(directory: str | os.PathLike, members: Sequence[str]) -> epath.Path:
    """Writes DIRECTORY/ensemble.json naming `members` (paths relative to it), each checked to
    be a checkpoint first; returns the file's path."""
    directory = storage.path(directory)
    if not members:
        raise CheckpointError(f"{directory}: an ensemble needs at least one member")
    for member in members:
        if storage.is_remote(member) or os.path.isabs(member):
            raise CheckpointError(f"{member}: give members relative to {directory}")
        read_meta(directory / member)  # raises naming the member when it is no checkpoint
    path = directory / ENSEMBLE_FILE
    write_json(path, {"format_version": FORMAT_VERSION, "kind": "ensemble", "members": list(members)})
    return path


def member_dirs(directory: str | os.PathLike) -> list[str]:
    """The checkpoint directories behind `--checkpoint DIR`: DIR itself, or an ensemble's
    members (each must be a checkpoint; errors name the file)."""
    path = storage.path(directory) / ENSEMBLE_FILE
    if not path.is_file():
        return [os.fspath(directory)]
    try:
        spec = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the ensemble: {e}") from e
    members = spec.get("members") if isinstance(spec, dict) else None
    if spec.get("kind") != "ensemble" or not isinstance(members, list) or not members \
            or not all(isinstance(m, str) for m in members):
        raise CheckpointError(f"{path}: expected {{\"kind\": \"ensemble\", \"members\": [dirs]}}")
    dirs = [os.fspath(path.parent / m) for m in members]
    for d in dirs:
        read_meta(d)
    return dirs


class EnsemblePredictor:
    """The average of several predictors' probabilities (each a `inference.Predictor` or any
    `images -> probability maps` callable).

    `held_out[k]`, when given, is the set of image stems member k never trained on;
    `predict_examples` then averages, per image, only the members that held it out.
    """

    def __init__(self, predictors: Sequence, held_out: Sequence[set[str]] | None = None):
        if not predictors:
            raise ValueError("an ensemble needs at least one predictor")
        if held_out is not None and len(held_out) != len(predictors):
            raise ValueError(f"{len(held_out)} held-out sets for {len(predictors)} predictors")
        self.predictors = list(predictors)
        self.held_out = None if held_out is None else [set(h) for h in held_out]

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every member's average (new images: no member trained on them)."""
        return self._average(images, [range(len(self.predictors))] * len(images))

    def members_for(self, stem: str) -> list[int]:
        if self.held_out is None:
            return list(range(len(self.predictors)))
        return [k for k, held in enumerate(self.held_out) if stem in held]

    def predict_examples(self, stems: Sequence[str], images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, the average of the members that held its stem out (ValueError if none)."""
        who = [self.members_for(s) for s in stems]
        missing = [s for s, w in zip(stems, who) if not w]
        if missing:
            raise ValueError(f"no member of the ensemble held out image(s) {missing[:5]}: "
                             "every member trained on them")
        return self._average(images, who)

    def _average(self, images, who) -> list[np.ndarray]:
        """Image i's mean over the members `who[i]`; each member runs once, on its images."""
        total = [None] * len(images)
        for k, predict in enumerate(self.predictors):
            mine = [i for i, w in enumerate(who) if k in w]
            if not mine:
                continue
            for i, p in zip(mine, predict([images[i] for i in mine])):
                p = np.asarray(p, np.float32)
                total[i] = p if total[i] is None else total[i] + p
        return [t / len(w) for t, w in zip(total, who)]


def predictor(bundles: Sequence, *, batch_size: int = 8, tta: bool = False,
              held_out: Sequence[set[str]] | None = None):
    """One bundle's `inference.Predictor`, or the members' `EnsemblePredictor`."""
    from hanet_jax.inference.predictor import Predictor

    predictors = [Predictor(b, batch_size=batch_size, tta=tta) for b in bundles]
    return predictors[0] if len(predictors) == 1 else EnsemblePredictor(predictors, held_out)


def load_predictor(checkpoint: str | os.PathLike, *, batch_size: int = 8, tta: bool = False):
    """The predictor behind `--checkpoint DIR` (one checkpoint or an ensemble's average), for
    new images. Raises CheckpointError naming the file."""
    from hanet_jax.checkpoints.loading import load_bundle

    return predictor([load_bundle(d) for d in member_dirs(checkpoint)], batch_size=batch_size, tta=tta)


COMMAND = command_line.Command("python -m hanet_jax.inference.ensemble", __doc__, subcommands={
    "write": command_line.Command(
        "python -m hanet_jax.inference.ensemble write",
        "Writes DIR/ensemble.json over the MEMBERS (checkpoint dirs, relative to DIR).",
        positional=("DIR", "MEMBERS...")),
})


def main(argv: Sequence[str] | None = None) -> int:
    args = COMMAND.parse(argv)  # the one subcommand: write
    try:
        print(f"wrote {write(args.dir, args.members)}")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The `hanet-ensemble` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
