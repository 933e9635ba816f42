"""The function every export format holds, built from any checkpoint `predict.py` accepts.

float32 NHWC images in [0, 1] at the model size -> float32 probabilities (N, H, W, 1): the
sigmoid of the logits (with `tta`, averaged with the horizontally flipped prediction, as
`predict.py --tta`), averaged over an ensemble's members. The weights are constants of the
function, so an artifact is self-contained.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.checkpoints.loading import Bundle, load_bundle
from hanet_jax.inference.ensemble import member_dirs


class ExportError(Exception):
    """An export that cannot be written; the message is one line naming the file or the op."""


@dataclasses.dataclass
class ServingFunction:
    fn: Callable[[jax.Array], jax.Array]
    image_size: tuple[int, int]
    bundles: list[Bundle]
    members: list[str]
    tta: bool

    def input_spec(self, batch: int | str = "batch") -> jax.ShapeDtypeStruct:
        """The input's shape and dtype; a string `batch` is a symbolic (any-size) batch."""
        if isinstance(batch, str):
            batch = jax.export.symbolic_shape(batch)[0]
        return jax.ShapeDtypeStruct((batch, *self.image_size, 3), jnp.float32)

    def example_inputs(self, n: int = 2, seed: int = 0) -> np.ndarray:
        """Images for the format checks: uniform in [0, 1], as the preprocessing gives."""
        return np.random.default_rng(seed).uniform(size=(n, *self.image_size, 3)).astype(np.float32)


def _probabilities(model, variables, x, tta: bool):
    prob = jax.nn.sigmoid(model.apply(variables, x, train=False).astype(jnp.float32))
    if tta:
        flipped = jax.nn.sigmoid(model.apply(variables, x[:, :, ::-1], train=False).astype(jnp.float32))
        prob = 0.5 * (prob + flipped[:, :, ::-1])
    return prob


def serving_function(checkpoint: str | os.PathLike, *, tta: bool = False,
                     image_size: Sequence[int] | None = None) -> ServingFunction:
    """The serving function of `checkpoint` (a workdir, a ported checkpoint or an ensemble).

    `image_size` defaults to the checkpoint's; another size works only where no weight depends
    on it (the TAM's position encoding does). Raises ExportError naming the file or the key."""
    try:
        members = member_dirs(checkpoint)
        bundles = [load_bundle(d) for d in members]
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    sizes = {tuple(b.image_size) for b in bundles}
    if len(sizes) > 1:
        raise ExportError(f"{checkpoint}: the ensemble's members take different image sizes "
                          f"({', '.join(f'{m}: {tuple(b.image_size)}' for m, b in zip(members, bundles))})")
    size = tuple(image_size) if image_size else sizes.pop()
    if len(size) != 2 or min(size) < 32 or any(s % 32 for s in size):
        raise ExportError(f"--image_size {size}: two sides, each a positive multiple of 32 "
                          "(the encoder halves the map five times)")
    # Constants of the function: jax.export, jax2tf and jax2onnx embed them in the artifact.
    variables = [jax.tree.map(jnp.asarray, b.variables) for b in bundles]

    def fn(x):
        probs = [_probabilities(b.model, v, x, tta) for b, v in zip(bundles, variables)]
        return sum(probs[1:], probs[0]) / len(probs)

    serving = ServingFunction(fn, size, bundles, members, bool(tta))
    try:
        jax.eval_shape(fn, serving.input_spec(1))
    except Exception as e:  # noqa: BLE001  (a weight shaped for another size, typically)
        raise ExportError(f"{checkpoint}: the model cannot run at {size[0]}x{size[1]} (its weights were "
                          f"made for {bundles[0].image_size[0]}x{bundles[0].image_size[1]}): "
                          f"{first_line(e)}") from e
    return serving


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# The ways a converter says it met an op it cannot express, and where the op's name is.
_UNSUPPORTED_OP = (
    re.compile(r"[Nn]o plugins? registered for primitive '([^']+)'"),      # jax2onnx
    re.compile(r"stablehlo\.custom_call @([\w.\-]+)"),                      # jax.export, jax2tf
    re.compile(r"multi-platform lowering for ([\w.\-]+)"),                   # jax.export
    re.compile(r"serialization of ([\w.\-]+) is not yet implemented"),        # jax2tf
)


def converter_error(fmt: str, file: str, error: BaseException) -> ExportError:
    """One line for a converter's failure: the op it cannot express where it names one."""
    text = str(error)
    for pattern in _UNSUPPORTED_OP:
        found = pattern.search(text)
        if found:
            return ExportError(f"{file}: the {fmt} converter cannot express the op {found.group(1)!r}")
    return ExportError(f"{file}: the {fmt} export failed: {first_line(error)}")
