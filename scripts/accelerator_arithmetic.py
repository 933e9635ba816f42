"""The train step's FLOPs and bytes from XLA's cost analysis, and what an epoch would take on an
A100, an H100 and a TPU v5e at a given MFU: arithmetic, not a measurement.

    python scripts/accelerator_arithmetic.py                 # 256x256, batch 32, MFU 40%
    python scripts/accelerator_arithmetic.py --mfu=0.3 --batch_size=10

The counts are XLA's, of the handler-free lowering (`train.mfu.step_flops`: the step a GPU or TPU
compiles), traced on this CPU without compiling: the train step `train.py` runs (BUSI recipe,
augmentation on the device) and the validation forward. An epoch is the paper's BUSI recipe:
2,588 training and 647 validation images (`bench.accelerator_check`). float32 is priced at the
TF32 peak on the GPUs (JAX's default there, `train.mfu.float32_matmul_mode`) and at the bf16
peak on the TPU (its default single bf16 pass). Prints a markdown table and one JSON line.
"""

import json
import sys

import jax
import numpy as np
from absl import flags

from hanet_jax import command_line
from hanet_jax.bench.accelerator_check import (PAPER_EPOCHS, PAPER_TRAIN_IMAGES,
                                               PAPER_VAL_IMAGES)
from hanet_jax.ops.cpu import settings as cpu_settings

DEVICES = ("NVIDIA A100", "NVIDIA H100 SXM", "TPU v5e")


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("image_size", 256, "input side", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "global batch of the step", flag_values=fv)
    flags.DEFINE_float("mfu", 0.4, "the utilisation assumed", flag_values=fv)


COMMAND = command_line.Command("python scripts/accelerator_arithmetic.py", __doc__, _define_flags)


def _costs(dtype: str, image_size: int, batch_size: int) -> dict:
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train import recipes
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.input import augment_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import batch_sharded, make_mesh
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import compiled_steps

    config = recipes.dataset_recipe("busi")
    model = model_from_config(resolve_model_config(
        {**config.model.to_dict(), "image_size": image_size, "dtype": dtype}, ""))
    tx, plateau, _ = optimizer_from_config(config.optimizer, total_steps=1000)
    mesh = make_mesh(jax.devices()[:1])
    state = create_train_state(model, image_size, tx, plateau, 0, mesh)
    shape = (batch_size, image_size, image_size)
    batch = jax.device_put({"image": np.zeros(shape + (3,), np.uint8),
                            "mask": np.zeros(shape + (1,), np.uint8),
                            "index": np.arange(batch_size, dtype=np.int32),
                            "epoch": np.zeros(batch_size, np.int32)}, batch_sharded(mesh))
    train = compiled_steps(model, config.loss, tx, mesh, augment=augment_config(config.data)).train
    forward = jax.jit(lambda v, x: model.apply(v, x.astype(np.float32) / 255, train=False))
    with cpu_settings.disabled():
        costs = {"train": train.lower(state, batch).cost_analysis(),
                 "forward": forward.lower(state.eval_variables, batch["image"]).cost_analysis()}
    return {f"{name}_{key}_per_image": float(cost[field]) / batch_size
            for name, cost in costs.items()
            for key, field in (("flops", "flops"), ("bytes", "bytes accessed"))}


def main(argv=None) -> int:
    from hanet_jax.train import mfu

    args = COMMAND.parse(argv)
    result = {"image_size": args.image_size, "batch_size": args.batch_size, "mfu": args.mfu,
              "train_images": PAPER_TRAIN_IMAGES, "val_images": PAPER_VAL_IMAGES,
              "costs": {}, "epochs": {}}
    rows = ["| device | dtype | peak TFLOP/s | epoch (s) | 155 epochs (min) |", "|---|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        cost = _costs(dtype, args.image_size, args.batch_size)
        result["costs"][dtype] = cost
        epoch_flops = (PAPER_TRAIN_IMAGES * cost["train_flops_per_image"]
                       + PAPER_VAL_IMAGES * cost["forward_flops_per_image"])
        for name in DEVICES:
            row = next(p for p in mfu.PEAKS if p.name == name)
            peak = row.bf16 if dtype == "bfloat16" or row.tf32 is None else row.tf32
            epoch_s = epoch_flops / (args.mfu * peak)
            result["epochs"][f"{name}/{dtype}"] = {"peak_flops": peak, "epoch_s": epoch_s}
            rows.append(f"| {name} | {dtype}{' (TF32)' if row.tf32 and dtype == 'float32' else ''}"
                        f" | {peak / 1e12:.0f} | {epoch_s:.2f} | {PAPER_EPOCHS * epoch_s / 60:.1f} |")
    for dtype, cost in result["costs"].items():
        print(f"{dtype}: train step {cost['train_flops_per_image'] / 1e9:.1f} GFLOP and "
              f"{cost['train_bytes_per_image'] / 1e9:.2f} GB accessed per image; forward "
              f"{cost['forward_flops_per_image'] / 1e9:.1f} GFLOP, "
              f"{cost['forward_bytes_per_image'] / 1e9:.2f} GB per image")
    print("\n".join(rows))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
