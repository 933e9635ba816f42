"""Grad-CAM of the SFEB outputs: the capture (interceptor + perturb) gives the exact gradient,
and the maps of a random HA-Net have the image's size, are finite, non-negative, not all zero."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hanet_jax.eval import gradcam
from hanet_jax.checkpoints.loading import Bundle
from hanet_jax.models.hanet import HANet
from hanet_jax.models.sfeb import SFEB

from model_fixtures import SIZE, tiny_model


def test_interceptor_perturbation_gives_the_gradient_at_the_sfeb_output():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, *, train):
            y = SFEB(name="sfeb")(nn.Conv(4, (3, 3))(x), train=train)
            self.sow("intermediates", "sfeb_out", y)
            return y

    net = Net()
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = net.init(jax.random.key(0), x, train=False)
    zeros = gradcam._zero_perturbations(net, variables, x)
    assert jax.tree.map(jnp.shape, zeros) == {"sfeb": {"sfeb_out": (2, 8, 8, 4)}}

    def target(p):
        with nn.intercept_methods(gradcam._perturb_sfeb_outputs):
            y, state = net.apply({**variables, "perturbations": p}, x, train=False, mutable=["intermediates"])
        return jnp.sum(y ** 2), state["intermediates"]["sfeb_out"][0]

    grads, y = jax.grad(target, has_aux=True)(zeros)
    np.testing.assert_allclose(grads["sfeb"]["sfeb_out"], 2 * y, rtol=1e-6)
    # zero perturbations leave the forward pass unchanged
    np.testing.assert_array_equal(y, net.apply(variables, x, train=False))


@pytest.mark.slow
def test_gradcam_maps_have_the_image_size_and_are_finite_non_negative_and_not_all_zero():
    model, variables = tiny_model()
    bundle = Bundle(model, variables, SIZE, {})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    cams = gradcam.gradcam(bundle, images)
    assert [c.shape for c in cams] == [(4, 50, 70), (4, 64, 64)]
    for c in cams:
        assert c.dtype == np.float32 and np.isfinite(c).all() and (c >= 0).all()
        assert c.max() > 0
    # each of sfeb1..4 lights up somewhere (ReLU may zero a stage on one image)
    assert all(max(float(c[k].max()) for c in cams) > 0 for k in range(4))
    picture = gradcam.figure(images[0], cams[0], title="x")
    assert picture.size[0] == 5 * 70 + 6 * 4  # image + 4 maps, 4-pixel gaps


def test_gradcam_refuses_a_model_without_sfeb():
    with pytest.raises(ValueError, match="no SFEB|has none"):
        gradcam.make_cam_fn(HANet(variant="baseline"))
