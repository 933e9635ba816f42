"""HA-Net's conv MACs: the release's Keras count per layer kind against the matmuls and convs of our
forward's jaxpr (CPU handlers off). Prints both breakdowns; docs/baselines.md quotes them.

    python experiments/flops/hanet_macs_vs_release.py
"""
import os; os.environ["KERAS_BACKEND"]="tensorflow"
import collections
import jax, jax.numpy as jnp
from hanet_jax.reference import keras_original as ko
from keras import layers
m = ko.build_keras_hanet("full", (256,256,3))
byk = collections.Counter()
for layer in m.layers:
    if isinstance(layer, layers.Conv2D):
        _, oh, ow, oc = layer.output.shape; kh, kw, cin, _ = layer.kernel.shape
        byk[(kh, oh)] += oh*ow*oc*kh*kw*cin
print("keras", ko.conv_macs(m), sorted(byk.items()))
from hanet_jax.ops.cpu import settings
from hanet_jax.models import model_from_config
mod = model_from_config({"architecture": "hanet"})
x = jnp.zeros((1,256,256,3))
v = jax.eval_shape(lambda: mod.init(jax.random.PRNGKey(0), x, train=False))
with settings.disabled():
    jx = jax.make_jaxpr(lambda v, x: mod.apply(v, x, train=False))(v, x)
ours = collections.Counter()
def walk(j):
    for e in j.eqns:
        n = e.primitive.name
        if n == "conv_general_dilated":
            rhs, out = e.invars[1].aval, e.outvars[0].aval
            ours[(rhs.shape[0], out.shape[1])] += out.shape[1]*out.shape[2]*out.shape[3]*rhs.shape[0]*rhs.shape[1]*rhs.shape[2]
        elif n == "dot_general":
            (c, _), _ = e.params["dimension_numbers"]; lhs = e.invars[0].aval; out = e.outvars[0].aval
            import numpy as np
            ours[("dot", lhs.shape, out.shape)] += int(np.prod(out.shape))*int(np.prod([lhs.shape[d] for d in c]))
        for val in e.params.values():
            for sub in val if isinstance(val,(tuple,list)) else (val,):
                inner=getattr(sub,"jaxpr",sub)
                if hasattr(inner,"eqns"): walk(inner)
walk(jx.jaxpr)
conv = {k: v for k, v in ours.items() if k[0] != "dot"}
dots = sum(v for k, v in ours.items() if k[0] == "dot")
print("ours conv", sorted(conv.items()), "dots", dots)
print("dot shapes sample", [k for k in ours if k[0]=="dot"][:8])
