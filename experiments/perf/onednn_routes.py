"""Does this jaxlib route a convolution or a matmul to oneDNN (TensorFlow's CPU kernels)?

    PYTHONPATH=. .venv/bin/python experiments/perf/onednn_routes.py

jaxlib's XLA:CPU holds oneDNN thunks (`xla_cpu_use_onednn`, `xla_cpu_experimental_onednn_*`),
and TensorFlow's convs, which beat ours, are oneDNN's. For each option set this compiles a 3x3
conv and a matmul, per executable, and prints which library the optimised HLO calls: `ynn`
(YNNPACK, the default), `onednn`, or `xla` (XLA's own emitter, Eigen). Nothing is timed.
The options can also be set process-wide: `XLA_FLAGS=--xla_cpu_use_onednn=true` gives the same.
"""
import jax
import jax.numpy as jnp

T = "LIBRARY_FUSION_TYPE_"
OPTIONS = {
    "default": {},
    "use_onednn": {"xla_cpu_use_onednn": True},
    "onednn_custom_call": {"xla_cpu_use_onednn": True,
                           "xla_cpu_experimental_onednn_custom_call": True},
    # YNNPACK keeps only what oneDNN is not asked to take.
    "onednn_fusion_conv": {"xla_cpu_experimental_onednn_fusion_type": T + "INDIVIDUAL_CONVOLUTION",
                           "xla_cpu_experimental_ynn_fusion_type": T + "INDIVIDUAL_DOT"},
    "onednn_fusion_dot": {"xla_cpu_experimental_onednn_fusion_type": T + "DOT",
                          "xla_cpu_experimental_ynn_fusion_type": T + "INDIVIDUAL_CONVOLUTION"},
}


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def library(hlo: str) -> str:
    # Options are echoed in the text, so look only at the instructions' call targets.
    body = "\n".join(l for l in hlo.splitlines() if " = " in l)
    if "onednn" in body.lower():
        return "onednn"
    return "ynn" if "__ynn_fusion" in body else "xla"


def main():
    cases = {"conv 3x3 4x64x64 128->128": (conv, (jnp.ones((4, 64, 64, 128)), jnp.ones((3, 3, 128, 128)))),
             "matmul 16384x128 @ 128x512": (jnp.matmul, (jnp.ones((16384, 128)), jnp.ones((128, 512))))}
    for name, opts in OPTIONS.items():
        routes = []
        for case, (fn, args) in cases.items():
            hlo = jax.jit(fn).lower(*args).compile(opts or None).as_text()
            routes.append(f"{case}: {library(hlo)}")
        print(f"{name:20s} " + "; ".join(routes), flush=True)


if __name__ == "__main__":
    main()
