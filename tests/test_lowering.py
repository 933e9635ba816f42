"""The graph a GPU or TPU compiles holds none of our CPU handlers, whichever host lowers it.

The inference forward and the real train step (the one `train.py` runs, with its shardings and
every augmentation on the device, on a simulated 4-device CPU mesh), of HA-Net in float32 and bfloat16 and of the three baselines, are lowered on this CPU for `cuda` and
for `tpu`: none of the custom-call targets of `hanet_jax.ops.cpu.targets` may appear. The CPU
lowering of the same functions still uses them (where the handlers can be built here), so the
CPU's speed is kept. A lowering proves a graph, not a speed.
"""

import json

import pytest
from _train_helpers import run_python

from hanet_jax.ops.cpu import conv as cpu_conv

LOWER = """
    import json
    import jax
    import numpy as np
    from hanet_jax.data.augment import AugmentConfig
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.ops.cpu import targets
    from hanet_jax.train.keras_callbacks import ReduceLROnPlateau
    from hanet_jax.train.optimizer import make_tx
    from hanet_jax.train.sharding import batch_sharded, make_mesh
    from hanet_jax.train.state import abstract_train_state
    from hanet_jax.train.steps import compiled_steps

    found = {"devices": jax.device_count()}
    networks = [("hanet", "float32", {"variant": "full", "encoder_blocks": (1, 1, 1, 1)}),
                ("hanet", "bfloat16", {"variant": "full", "encoder_blocks": (1, 1, 1, 1)})]
    networks += [(name, "float32", {"architecture": name, "base_filters": 8})
                 for name in ("unet", "attention_unet", "unet_plus_plus")]
    for arch, dtype, fields in networks:
        model = model_from_config({**fields, "dtype": dtype})
        tx = make_tx(1e-3, 0.9, 0.999, 1e-9)
        mesh = make_mesh()
        # shapes and shardings only: a lowering needs no weights (nor the init's compilation)
        state = abstract_train_state(model, 64, tx, ReduceLROnPlateau(), mesh)
        # the host's uint8 batch; the step converts and augments it on the device
        batch = jax.device_put({"image": np.zeros((8, 64, 64, 3), np.uint8),
                                "mask": np.zeros((8, 64, 64, 1), np.uint8),
                                "index": np.arange(8, dtype=np.int32),
                                "epoch": np.zeros(8, np.int32)}, batch_sharded(mesh))
        # the augmentation is the same for every network: HA-Net's steps carry it
        train = compiled_steps(model, "bce_jaccard", tx, mesh,
                               augment=AugmentConfig.all_on() if arch == "hanet" else None).train
        forward = jax.jit(lambda v, x: model.apply(v, x.astype(np.float32) / 255, train=False))
        for platform in ("cpu", "cuda", "tpu"):
            for name, traced in (("train", train.trace(state, batch)),
                                 ("forward", forward.trace(state.eval_variables, batch["image"]))):
                text = traced.lower(lowering_platforms=(platform,)).as_text()
                found[f"{arch}/{dtype}/{name}/{platform}"] = sorted(t for t in targets.CPU_ONLY if t in text)
    print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def lowered():
    done = run_python(LOWER, timeout=900, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("function", ["forward", "train"])
@pytest.mark.parametrize("network", ["hanet/float32", "hanet/bfloat16", "unet/float32",
                                     "attention_unet/float32", "unet_plus_plus/float32"])
def test_no_cpu_handler_in_an_accelerator_graph(lowered, network, function, platform):
    assert lowered["devices"] == 4
    assert lowered[f"{network}/{function}/{platform}"] == []


@pytest.mark.skipif(not cpu_conv.available(), reason="no C++ compiler / scipy OpenBLAS")
def test_the_cpu_graph_keeps_its_handlers(lowered):
    from hanet_jax.ops.cpu import targets

    # float32 on the CPU: our handlers, batch-sharded over the 4 devices (their names are then
    # inside jax's partitioning callback); bfloat16 stays XLA's.
    for network in ("hanet", "unet", "attention_unet", "unet_plus_plus"):
        assert lowered[f"{network}/float32/forward/cpu"] == [targets.PARTITIONED], network
        assert lowered[f"{network}/float32/train/cpu"] == [targets.PARTITIONED], network
    assert lowered["hanet/bfloat16/train/cpu"] == [] and lowered["hanet/bfloat16/forward/cpu"] == []
