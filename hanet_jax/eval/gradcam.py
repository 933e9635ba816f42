"""Grad-CAM of the four decoder SFEB outputs (the paper's Fig. 4).

For each image and each SFEB output A (B, h, w, C) of decoder stages dec1..dec4 (deepest
first; labelled sfeb1..sfeb4):

    target = mean logit over the PREDICTED mask (pixels with sigmoid(logit) >= 0.5), taken as a
             constant set (stop-gradient); when the model predicts no pixel, the mean logit
             over the whole image. The mean (not the sum) keeps the scale of the maps
             independent of the lesion's size.
    w_c    = spatial mean of d target / d A_c
    CAM    = ReLU(sum_c w_c A_c), upsampled bilinearly to the image's own size.

Capture: the model file is left untouched. `nn.intercept_methods` wraps every
`SFEB.__call__` and passes its output through `Module.perturb("sfeb_out", ...)`, which adds a
zero variable of the `perturbations` collection (stored at `dec{i}/sfeb/sfeb_out`). One
`jax.grad` with respect to those zeros gives d target / d A; the activations A come from the
same forward pass through the `intermediates` the model already sows at
`dec{i}/sfeb_out`. The model runs with `train=False` (BatchNorm statistics, no dropout).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hanet_jax import storage
from hanet_jax.eval import overlays as viz
from hanet_jax.checkpoints.loading import Bundle
from hanet_jax.inference.predictor import preprocess, resize_probabilities
from hanet_jax.models.sfeb import SFEB

STAGES = ("dec1", "dec2", "dec3", "dec4")
LABELS = ("sfeb1", "sfeb2", "sfeb3", "sfeb4")
PERTURBATION = "sfeb_out"
SFEB_VARIANTS = ("full", "no_tam")


def _perturb_sfeb_outputs(next_fun, args, kwargs, context):
    """Method interceptor: SFEB outputs get a zero `perturbations` variable added."""
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, SFEB) and context.method_name == "__call__":
        out = context.module.perturb(PERTURBATION, out)
    return out


def has_sfeb(model) -> bool:
    return getattr(model, "variant", None) in SFEB_VARIANTS


def _zero_perturbations(model, variables, x):
    def shapes():
        with nn.intercept_methods(_perturb_sfeb_outputs):
            return model.apply(variables, x, train=False, mutable=["perturbations"])[1]["perturbations"]

    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))


def make_cam_fn(model):
    """jitted (variables, x float (B, h, w, 3)) -> CAMs float32 (B, 4, h_i, w_i) per stage,
    as a tuple of 4 arrays (one per stage, each at that stage's resolution)."""
    if not has_sfeb(model):
        raise ValueError(f"Grad-CAM needs SFEB blocks; model variant {getattr(model, 'variant', None)!r} "
                         f"has none (use one of {SFEB_VARIANTS})")

    def target_fn(perturbations, variables, x):
        with nn.intercept_methods(_perturb_sfeb_outputs):
            logits, state = model.apply({**variables, "perturbations": perturbations}, x,
                                        train=False, mutable=["intermediates"])
        logits = logits[..., 0].astype(jnp.float32)
        mask = jax.lax.stop_gradient((logits >= 0.0).astype(jnp.float32))  # sigmoid >= 0.5
        mask = jnp.where(mask.sum(axis=(1, 2), keepdims=True) > 0, mask, 1.0)  # empty: all pixels
        per_image = (logits * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2))
        # Images are independent in eval mode, so the batch sum gives per-image gradients.
        return per_image.sum(), state["intermediates"]

    def cams(variables, x):
        zeros = _zero_perturbations(model, variables, x)
        grads, inter = jax.grad(target_fn, has_aux=True)(zeros, variables, x)
        out = []
        for stage in STAGES:
            a = inter[stage][PERTURBATION][0].astype(jnp.float32)
            g = grads[stage]["sfeb"][PERTURBATION].astype(jnp.float32)
            w = g.mean(axis=(1, 2))  # (B, C)
            out.append(jax.nn.relu(jnp.einsum("bhwc,bc->bhw", a, w)))
        return tuple(out)

    return jax.jit(cams)


def gradcam(bundle: Bundle, images: Sequence[np.ndarray], cam_fn=None) -> list[np.ndarray]:
    """uint8 images of any size -> per image a float32 array (4, H, W) at that image's size:
    the non-negative Grad-CAM of sfeb1..sfeb4 (see the module docstring). One image per call
    of the jitted function, so one compilation serves every image."""
    cam_fn = cam_fn or make_cam_fn(bundle.model)
    result = []
    for image in images:
        x = preprocess(image, bundle.image_size)[None]
        stage_cams = cam_fn(bundle.variables, x)
        maps = [np.maximum(resize_probabilities(np.asarray(c[0]), image.shape[:2]), 0.0)
                for c in stage_cams]
        result.append(np.stack(maps).astype(np.float32))
    return result


def figure(image: np.ndarray, cams: np.ndarray, title: str = "", alpha: float = 0.5) -> Image.Image:
    """One picture: the image, then the four Grad-CAM heat maps (`viz.heatmap`, each min-max
    scaled on its own) side by side, labelled image, sfeb1..sfeb4, with `title` on top."""
    rgb = viz.to_rgb(image)
    tiles = [("image", rgb)] + [(label, viz.heatmap(cam, rgb, alpha)) for label, cam in zip(LABELS, cams)]
    h, w = rgb.shape[:2]
    gap, text_h = 4, 16
    top = text_h if title else 0
    canvas = Image.new("RGB", (len(tiles) * w + (len(tiles) + 1) * gap, top + text_h + h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((gap, 2), title, fill=(0, 0, 0), font=font)
    for j, (label, tile) in enumerate(tiles):
        x0 = gap + j * (w + gap)
        draw.text((x0, top + 2), label, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(tile), (x0, top + text_h))
    return canvas


def save_figures(bundle: Bundle, named_images: Sequence[tuple[str, np.ndarray]], out_dir) -> list[str]:
    """Writes `out_dir/<stem>_gradcam.png` for each (stem, uint8 image); returns the paths."""
    out = storage.path(out_dir)
    cam_fn = make_cam_fn(bundle.model)
    paths = []
    for stem, image in named_images:
        (cams,) = gradcam(bundle, [image], cam_fn)
        path = out / f"{stem}_gradcam.png"
        storage.write_png(path, figure(image, cams, title=f"{stem}: Grad-CAM of the SFEB outputs"))
        paths.append(os.fspath(path))
    return paths
