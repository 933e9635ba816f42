"""Serving latency on the CPU: the Flax model, its `model.jax` and onnxruntime on its `model.onnx`.

What a user choosing a CPU serving path compares: our jitted Flax forward (this CPU's handlers
on, as predict.py runs it), the exported StableHLO (`hanet-export`'s `model.jax`, XLA's ops
only, run through `jax.export.deserialize`), and onnxruntime running the exported `model.onnx`,
each at batch 1 and batch 8, on the same weights. Each call is images at the model size in,
probabilities out (no decoding or resizing). The three are warmed up, then timed interleaved,
and the median of `repeats` is kept. It runs in a fresh process with one XLA device (no CPU
split: a serving process does not split), where onnxruntime and XLA each use every core.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import traceback
from pathlib import Path
from typing import Sequence

BATCH_SIZES = (1, 8)
RUNTIMES = ("flax", "model_jax", "onnxruntime")


def measure(variant: str, image_size: Sequence[int], batch_sizes: Sequence[int] = BATCH_SIZES,
            repeats: int = 20, model_kwargs: dict | None = None) -> dict:
    """Milliseconds per call of each runtime at each batch size (this process, as it is)."""
    import jax
    import numpy as np

    from hanet_jax.bench.keras_comparison import fast_init, interleaved_medians
    from hanet_jax.export import to_onnx, to_stablehlo
    from hanet_jax.export.serving_function import ServingFunction
    from hanet_jax.inference.exported import load_runner
    from hanet_jax.models.hanet import HANet

    size = tuple(image_size)
    model = HANet(variant=variant, **(model_kwargs or {}))
    variables = fast_init(model, (1, *size, 3))
    serving = ServingFunction(lambda x: jax.nn.sigmoid(model.apply(variables, x, train=False)), size, [], [], False)
    flax = jax.jit(serving.fn)
    with tempfile.TemporaryDirectory() as tmp:
        to_stablehlo.write(serving, Path(tmp), ("cpu",))
        to_onnx.write(serving, Path(tmp))
        runners = {"model_jax": load_runner(Path(tmp) / to_stablehlo.FILE),
                   "onnxruntime": load_runner(Path(tmp) / to_onnx.FILE)}
    runners["flax"] = lambda x: np.asarray(flax(x))
    ms, largest_difference = {}, {}
    for b in batch_sizes:
        x = serving.example_inputs(b)
        want = runners["flax"](x)
        largest_difference[f"batch_{b}"] = {k: float(np.abs(runners[k](x) - want).max()) for k in ("model_jax", "onnxruntime")}
        seconds = interleaved_medians({k: (lambda run=runners[k]: run(x)) for k in RUNTIMES}, repeats, warmup=2)
        ms[f"batch_{b}"] = {k: 1e3 * s for k, s in seconds.items()}
    import onnxruntime

    return {"variant": variant, "image_size": list(size), "repeats": repeats, "ms_per_call": ms,
            "largest_difference_from_flax": largest_difference,
            "versions": {"jax": jax.__version__, "onnxruntime": onnxruntime.__version__},
            "cpu_count": os.cpu_count()}


def _worker(spec: dict, conn) -> None:
    try:
        # One XLA device: drop a CPU split the parent process set up for its data parallelism.
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        os.environ["XLA_FLAGS"] = " ".join(flags)
        conn.send(("ok", measure(**spec)))
    except BaseException:  # noqa: BLE001  (reported to the parent)
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run(variant: str, image_size: Sequence[int], batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = 20,
        model_kwargs: dict | None = None) -> dict:
    """`measure` in a fresh process (see the module docstring)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    spec = {"variant": variant, "image_size": list(image_size), "batch_sizes": list(batch_sizes),
            "repeats": repeats, "model_kwargs": model_kwargs}
    process = ctx.Process(target=_worker, args=(spec, child), daemon=True, name="bench-serving")
    process.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError:
        process.join(timeout=10)
        raise RuntimeError(f"bench: the serving-latency process died (exit code {process.exitcode})") from None
    finally:
        process.join(timeout=30)
    if status == "error":
        raise RuntimeError(f"bench: the serving latency failed in its process:\n{value}")
    return value


def markdown_table(r: dict) -> str:
    """ms per call, each runtime at each batch size, and its speed relative to the Flax model."""
    lines = [f"Serving latency on the CPU, `{r['variant']}` at {r['image_size'][0]}x{r['image_size'][1]}, "
             f"median of {r['repeats']} (ms per call; images at the model size in, probabilities out)", "",
             "| batch | Flax (handlers on) | model.jax (speed vs Flax) | onnxruntime, model.onnx (speed vs Flax) |",
             "|---|---|---|---|"]
    for key, ms in r["ms_per_call"].items():
        flax = ms["flax"]
        cells = [f"{ms[k]:.1f}" + ("" if k == "flax" else f" ({flax / ms[k]:.2f}x)") for k in RUNTIMES]
        lines.append(f"| {key.split('_')[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
