"""The floor XLA:CPU's conv and matmul kernels put under the bench's step times.

    PYTHONPATH=. .venv/bin/python experiments/perf/conv_floor.py [--batch_size 8] [--image_size 256]

Walks the jaxpr of the bench's inference (forward, train=False) and of the train step's
gradient (forward and backward, train=True), keeps every `conv_general_dilated` and
`dot_general` (the transposed convs of the backward pass included), and times each distinct one
alone, jitted on random inputs of its shapes (median of --repeats). The sum over the model is
what those kernels cost even if every other op (BatchNorm, ReLU, concatenation, pooling,
the optimizer) were free: no change outside the kernels can make a step faster than that.
Each op is timed on one XLA device with the host's threads, as one op of a step would run.
"""
import argparse
import collections

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.train.losses import make_loss  # noqa: E402

KERNELS = ("conv_general_dilated", "dot_general")


def _subjaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _subjaxprs(v)


def kernel_eqns(jaxpr):
    """Every conv/dot equation, nested calls (jit, custom_vjp, remat) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in KERNELS:
            yield eqn
        for value in eqn.params.values():
            for sub in _subjaxprs(value):
                yield from kernel_eqns(sub)


def _median_seconds(fn, args, repeats: int) -> float:
    call = lambda: jax.block_until_ready(fn(*args))  # noqa: E731
    return keras_comparison.interleaved_medians({"op": call}, repeats)["op"]


def time_kernels(jaxpr, repeats: int) -> tuple[float, int, list]:
    """(seconds for all of them, how many ops, the ten costliest kinds). Each op's time is net of
    the cost of dispatching a trivial jitted call, which a step pays once, not per op."""
    dispatch = _median_seconds(jax.jit(lambda a, b: a + b), (jnp.ones(()), jnp.ones(())), 20)
    groups = collections.defaultdict(list)
    for eqn in kernel_eqns(jaxpr):
        avals = tuple((v.aval.shape, str(v.aval.dtype)) for v in eqn.invars)
        groups[(eqn.primitive.name, avals, repr(sorted(eqn.params.items())))].append(eqn)
    rng = np.random.default_rng(0)
    costs = []
    for (name, avals, _), eqns in groups.items():
        eqn = eqns[0]
        fn = jax.jit(lambda *a, eqn=eqn: eqn.primitive.bind(*a, **eqn.params))
        args = [jnp.asarray(rng.standard_normal(shape).astype(dtype)) for shape, dtype in avals]
        seconds = max(0.0, _median_seconds(fn, args, repeats) - dispatch)
        costs.append((seconds * len(eqns), len(eqns), name, avals))
    costs.sort(reverse=True)
    return sum(c[0] for c in costs), sum(c[1] for c in costs), costs[:10]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch = keras_comparison.synthetic_batch(args.batch_size, (args.image_size, args.image_size))
    model = keras_comparison.HANet(variant="full")
    variables = keras_comparison.fast_init(model, batch["image"][:1].shape)
    x, y = jnp.asarray(batch["image"]), jnp.asarray(batch["mask"])
    loss = make_loss("bce_jaccard")

    def train_loss(params):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return loss(out, y)

    programs = {
        "inference": jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables).jaxpr,
        "train (fwd + bwd)": jax.make_jaxpr(jax.grad(train_loss))(variables["params"]).jaxpr,
    }
    for what, jaxpr in programs.items():
        seconds, n, top = time_kernels(jaxpr, args.repeats)
        print(f"{what}: {n} conv/dot ops, {1e3 * seconds:.0f} ms per batch of {args.batch_size} "
              f"-> at most {args.batch_size / seconds:.2f} images/s from these kernels alone", flush=True)
        for sec, count, name, avals in top:
            print(f"    {1e3 * sec:7.1f} ms  x{count:<3d} {name} {[s for s, _ in avals]}")


if __name__ == "__main__":
    main()
