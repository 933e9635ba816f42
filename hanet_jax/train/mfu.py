"""Model FLOP utilisation: a step's FLOPs, the devices' peak, and how float32 matmuls run.

MFU = (FLOPs of one training step x steps) / seconds / (devices x peak FLOP/s per device).

* **The step's FLOPs** (`step_flops`): XLA's cost analysis of the step's lowering with the CPU
  handlers off (`ops.cpu.settings.disabled()`, a fresh trace of the same jitted function): the
  cost analysis cannot see inside our CPU custom calls (a handler's conv counts 0), so the
  handler-free lowering is what a GPU or TPU runs. It is the count of the *unoptimised*,
  unpartitioned module (`Lowered.cost_analysis()`): the whole global batch's FLOPs whatever the
  mesh, and no compilation (2 to 4 s for the tests' tiny train step on 2 loaded CPU cores, where
  compiling it takes 15 s). A compiled module's count would be one device's share, after the CPU
  compiler's own rewrites (about 4% more than the lowered count for that step).
* **The peak** (`peak_flops`): a table of dense (no 2:4 sparsity) vendor figures per device kind,
  for the compute dtype and for the way float32 matmuls run (TF32 on an Ampere-or-later GPU by
  default; one or more bfloat16 passes on a TPU); `config.peak_flops > 0` overrides it. On the
  CPU: the float32 matmul rate measured here (`peak_matmul_gflops`, the probe `bench.py` uses),
  shared by the CPU devices when the host is split into several (`ops.cpu.devices`).

What jax does with a float32 matmul (jax 0.10, `jax.lax.Precision`'s docstring, and the
"Matmul precision" page of the JAX docs, https://docs.jax.dev/en/latest/201/precision.html:
"By default, JAX leans toward speed: float32 dot products may be computed with reduced-precision
arithmetic internally (bfloat16 on TPU, TF32 on recent GPUs)"): with
`jax_default_matmul_precision` unset (None, i.e. Precision.DEFAULT) a GPU of compute capability
8.0 or later (A100, H100, L4, ...) runs float32 matmuls and convolutions as TF32 on its tensor
cores; 'high' / 'tensorfloat32' also gives TF32; only 'highest' / 'float32' gives true float32.
A V100 has no TF32 and runs float32 in any case. On a TPU, DEFAULT is one bfloat16 pass, 'high'
three (bfloat16_3x) and 'highest' six. NVIDIA_TF32_OVERRIDE=0 turns TF32 off in cuBLAS and cuDNN
whatever jax asks. The CPU ignores the setting (float32). The models set no per-op precision.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.ops.cpu import settings as cpu_settings

T = 1e12


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """Dense peak FLOP/s of one JAX device (a GPU, or a TPU chip or core as JAX counts them)."""
    name: str
    pattern: str            # regex searched in the lower-cased `jax.Device.device_kind`
    bf16: float             # bfloat16 matmul, float32 accumulation (tensor cores / MXU)
    f32: float              # GPU: float32 on the CUDA cores; TPU: unused (f32 = bf16 passes)
    tf32: float | None      # GPU: TF32 tensor cores; None where there are none (V100, TPU)
    source: str             # the vendor's datasheet


# Dense figures: NVIDIA's datasheets print the tensor-core rates "with sparsity" (2:4); the dense
# rate, which a conv net gets, is half of that. Rows are tried in order: the first whose pattern
# matches `device_kind` wins, so variants (NVL, PCIe) come before the plain name.
PEAKS: tuple[DevicePeak, ...] = (
    # NVIDIA A100 datasheet (SXM and PCIe alike): FP32 19.5 TF; TF32 156 TF (312 sparse); BF16 312
    # TF (624 sparse). https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    DevicePeak("NVIDIA A100", r"\ba100\b", bf16=312 * T, f32=19.5 * T, tf32=156 * T,
               source="NVIDIA A100 datasheet"),
    # NVIDIA H100 datasheet, H100 NVL column: FP32 60 TF; TF32 835 TF sparse; BF16 1,671 TF sparse.
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
    DevicePeak("NVIDIA H100 NVL", r"\bh100\b.*\bnvl\b", bf16=835.5 * T, f32=60 * T,
               tf32=417.5 * T, source="NVIDIA H100 datasheet (NVL)"),
    # Same datasheet, H100 PCIe column: FP32 51 TF; TF32 756 TF sparse; BF16 1,513 TF sparse.
    DevicePeak("NVIDIA H100 PCIe", r"\bh100\b.*\bpcie\b", bf16=756.5 * T, f32=51 * T,
               tf32=378 * T, source="NVIDIA H100 datasheet (PCIe)"),
    # Same datasheet, H100 SXM column ("NVIDIA H100 80GB HBM3"): FP32 67 TF; TF32 989 TF sparse;
    # BF16 1,979 TF sparse.
    DevicePeak("NVIDIA H100 SXM", r"\bh100\b", bf16=989.5 * T, f32=67 * T, tf32=494.5 * T,
               source="NVIDIA H100 datasheet (SXM)"),
    # NVIDIA H200 datasheet, H200 NVL column: FP32 60 TF; TF32 835 TF sparse; BF16 1,671 TF sparse.
    # https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446
    DevicePeak("NVIDIA H200 NVL", r"\bh200\b.*\bnvl\b", bf16=835.5 * T, f32=60 * T,
               tf32=417.5 * T, source="NVIDIA H200 datasheet (NVL)"),
    # Same datasheet, H200 SXM column: FP32 67 TF; TF32 989 TF sparse; BF16 1,979 TF sparse.
    DevicePeak("NVIDIA H200 SXM", r"\bh200\b", bf16=989.5 * T, f32=67 * T, tf32=494.5 * T,
               source="NVIDIA H200 datasheet (SXM)"),
    # NVIDIA L40S datasheet: FP32 91.6 TF; TF32 366 TF sparse; BF16 733 TF sparse.
    # https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413
    DevicePeak("NVIDIA L40S", r"\bl40s\b", bf16=366.5 * T, f32=91.6 * T, tf32=183 * T,
               source="NVIDIA L40S datasheet"),
    # NVIDIA L4 datasheet: FP32 30.3 TF; TF32 120 TF sparse; BF16 242 TF sparse.
    # https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet
    DevicePeak("NVIDIA L4", r"\bl4\b", bf16=121 * T, f32=30.3 * T, tf32=60 * T,
               source="NVIDIA L4 datasheet"),
    # NVIDIA V100 datasheet: V100S PCIe FP32 16.4 TF; V100 SXM2 15.7 TF; V100 PCIe 14 TF. Volta has
    # no bfloat16 or TF32 tensor cores (its 112-130 TF are float16): bfloat16 and float32 both run
    # at the CUDA cores' float32 rate. https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf
    DevicePeak("NVIDIA V100S PCIe", r"\bv100s\b", bf16=16.4 * T, f32=16.4 * T, tf32=None,
               source="NVIDIA V100 datasheet (V100S PCIe)"),
    DevicePeak("NVIDIA V100 PCIe", r"\bv100\b.*\bpcie\b", bf16=14 * T, f32=14 * T, tf32=None,
               source="NVIDIA V100 datasheet (PCIe)"),
    DevicePeak("NVIDIA V100 SXM2", r"\bv100\b", bf16=15.7 * T, f32=15.7 * T, tf32=None,
               source="NVIDIA V100 datasheet (SXM2)"),
    # Cloud TPU system architecture: v2 45 TF bf16 per chip, v3 123 TF, two TensorCores per chip,
    # which JAX shows as two devices. https://cloud.google.com/tpu/docs/system-architecture-tpu-vm
    DevicePeak("TPU v2 (per core)", r"^tpu v2$", bf16=22.5 * T, f32=22.5 * T, tf32=None,
               source="Cloud TPU system architecture (v2: 45 TFLOPs bf16 per chip, 2 cores)"),
    DevicePeak("TPU v3 (per core)", r"^tpu v3$", bf16=61.5 * T, f32=61.5 * T, tf32=None,
               source="Cloud TPU system architecture (v3: 123 TFLOPs bf16 per chip, 2 cores)"),
    # Cloud TPU v4 page: peak compute per chip 275 TFLOPs (bf16); one device per chip (megacore).
    # https://cloud.google.com/tpu/docs/v4
    DevicePeak("TPU v4", r"^tpu v4$", bf16=275 * T, f32=275 * T, tf32=None,
               source="Cloud TPU v4 docs (275 TFLOPs bf16 per chip)"),
    # Cloud TPU v5e page ("TPU v5 lite"): 197 TFLOPs bf16 per chip. https://cloud.google.com/tpu/docs/v5e
    DevicePeak("TPU v5e", r"^tpu v5( lite|e)$", bf16=197 * T, f32=197 * T, tf32=None,
               source="Cloud TPU v5e docs (197 TFLOPs bf16 per chip)"),
    # Cloud TPU v5p page ("TPU v5"): 459 TFLOPs bf16 per chip. https://cloud.google.com/tpu/docs/v5p
    DevicePeak("TPU v5p", r"^tpu v5p?$", bf16=459 * T, f32=459 * T, tf32=None,
               source="Cloud TPU v5p docs (459 TFLOPs bf16 per chip)"),
    # Cloud TPU v6e (Trillium) page ("TPU v6 lite"): 918 TFLOPs bf16 per chip.
    # https://cloud.google.com/tpu/docs/v6e
    DevicePeak("TPU v6e (Trillium)", r"^tpu v6( lite|e)$", bf16=918 * T, f32=918 * T, tf32=None,
               source="Cloud TPU v6e docs (918 TFLOPs bf16 per chip)"),
)


def lookup(device_kind: str) -> DevicePeak | None:
    """The table's row for a `jax.Device.device_kind` ("NVIDIA A100-SXM4-80GB", "TPU v5 lite"),
    or None for a kind it does not know."""
    kind = " ".join(device_kind.lower().replace("-", " ").replace("_", " ").split())
    for row in PEAKS:
        if re.search(row.pattern, kind):
            return row
    return None


# ----------------------------------------------------------------------- float32 matmuls

# jax_default_matmul_precision's values (legacy names and dot-algorithm presets) -> (what a GPU
# runs: "tf32" where it has TF32, "float32" or "bf16"; how many such passes; how many bfloat16
# passes a TPU runs). None (unset) is Precision.DEFAULT. Other presets (F16, F8) count as DEFAULT.
_PRECISIONS: dict[Any, tuple[str, int, int]] = {
    None: ("tf32", 1, 1), "default": ("tf32", 1, 1), "fastest": ("tf32", 1, 1),
    "bfloat16": ("tf32", 1, 1),
    "high": ("tf32", 1, 3), "tensorfloat32": ("tf32", 1, 3), "bfloat16_3x": ("tf32", 1, 3),
    "highest": ("float32", 1, 6), "float32": ("float32", 1, 6),
    "TF32_TF32_F32": ("tf32", 1, 3), "TF32_TF32_F32_X3": ("tf32", 3, 6),
    "F32_F32_F32": ("float32", 1, 6), "BF16_BF16_F32": ("bf16", 1, 1),
    "BF16_BF16_BF16": ("bf16", 1, 1),
    "BF16_BF16_F32_X3": ("bf16", 3, 3), "BF16_BF16_F32_X6": ("bf16", 6, 6),
    "BF16_BF16_F32_X9": ("bf16", 9, 9),
}


class F32Matmul(NamedTuple):
    """How float32 matmuls and convs run on a device."""
    kind: str          # "tf32" | "float32" | "bf16" (a TPU's passes, or a BF16 preset) | "cpu"
    passes: int        # passes of that kind per product (TPU: 1, 3 or 6 bfloat16 passes)
    description: str   # the log line


def _precision() -> Any:
    """The effective jax_default_matmul_precision (the innermost context manager's, or the
    global config's; None when unset)."""
    value = jax.default_matmul_precision.value
    return getattr(value, "name", value)  # a DotAlgorithmPreset given as an object


def _tf32_capable(device, row: DevicePeak | None) -> bool:
    cc = getattr(device, "compute_capability", None)
    if cc:
        try:
            return int(str(cc).split(".")[0]) >= 8  # Ampere (8.0) or later
        except ValueError:
            pass
    return row is not None and row.tf32 is not None


def f32_matmul(device=None) -> F32Matmul:
    """How `device`'s float32 matmuls run under the current jax_default_matmul_precision."""
    device = device if device is not None else jax.devices()[0]
    platform = getattr(device, "platform", "cpu")
    if platform == "cpu":
        return F32Matmul("cpu", 1, "float32 (CPU)")
    precision = _precision()
    setting = f"jax_default_matmul_precision={precision!r}"
    gpu_kind, gpu_passes, tpu_passes = _PRECISIONS.get(precision, _PRECISIONS[None])
    if platform == "tpu":
        why = "the TPU default precision" if tpu_passes == 1 else setting
        return F32Matmul("bf16", tpu_passes, f"bf16 passes: {tpu_passes} ({why})")
    x = f" x{gpu_passes}" if gpu_passes > 1 else ""
    if gpu_kind == "bf16":
        return F32Matmul("bf16", gpu_passes, f"bf16{x} ({setting})")
    if gpu_kind == "tf32":
        row = lookup(getattr(device, "device_kind", ""))
        if os.environ.get("NVIDIA_TF32_OVERRIDE", "").strip() == "0":
            return F32Matmul("float32", 1, f"float32 (NVIDIA_TF32_OVERRIDE=0 overrides {setting})")
        if _tf32_capable(device, row):
            return F32Matmul("tf32", gpu_passes, f"TF32{x} ({setting} on an Ampere-or-later GPU)")
        return F32Matmul("float32", 1, f"float32 ({setting}, but this GPU has no TF32)")
    return F32Matmul("float32", 1, f"float32 ({setting}: precision highest)")


def float32_matmul_mode(device=None) -> str:
    """A short string for the log: how float32 matmuls run here, e.g. "TF32
    (jax_default_matmul_precision=None on an Ampere-or-later GPU)", "float32
    (jax_default_matmul_precision='highest': precision highest)", "bf16 passes: 1 (the TPU
    default precision)", "float32 (CPU)"."""
    return f32_matmul(device).description


# ----------------------------------------------------------------------------- the peak

class Peak(NamedTuple):
    flops: float | None   # per device, FLOP/s; None where unknown (then no MFU is logged)
    source: str           # where the figure came from, for the log


def _is_bf16(dtype) -> bool:
    return str(np.dtype(jnp.dtype(dtype))) == "bfloat16"


def peak_flops(device=None, dtype: Any = "float32", *, override: float = 0.0) -> Peak:
    """Per-device dense peak FLOP/s of `device` for a model computing in `dtype`, with float32
    matmuls as `f32_matmul(device)` says they run; `override > 0` (config.peak_flops) wins.
    On the CPU, the measured float32 matmul rate (cached per process) shared by the CPU devices."""
    if override and override > 0:
        return Peak(float(override), f"config.peak_flops={override:.4g}")
    device = device if device is not None else jax.devices()[0]
    platform = getattr(device, "platform", "cpu")
    if platform == "cpu":
        n = max(1, len([d for d in jax.local_devices() if d.platform == "cpu"]))
        machine = cpu_peak_flops()
        share = f", shared by {n} CPU devices" if n > 1 else ""
        return Peak(machine / n, f"measured float32 matmul peak of this host "
                                 f"({machine / 1e9:.1f} GFLOP/s{share})")
    kind = getattr(device, "device_kind", "?")
    row = lookup(kind)
    if row is None:
        return Peak(None, f"device kind {kind!r} is not in hanet_jax.train.mfu.PEAKS: set "
                          "--config.peak_flops (per-device FLOP/s) for MFU")
    if _is_bf16(dtype):
        return Peak(row.bf16, f"{row.name} bfloat16 peak ({row.source})")
    mode = f32_matmul(device)
    per = f" / {mode.passes} passes" if mode.passes > 1 else ""
    if mode.kind == "bf16":
        return Peak(row.bf16 / mode.passes,
                    f"{row.name} bfloat16 peak{per} (float32 matmuls as bf16; {row.source})")
    if mode.kind == "tf32" and row.tf32 is not None:
        return Peak(row.tf32 / mode.passes, f"{row.name} TF32 peak{per} ({row.source})")
    return Peak(row.f32, f"{row.name} float32 peak ({row.source})")


# ---------------------------------------------------------------- the CPU's matmul probe

def median_gflops(matmul: Callable[[], Any], n: int, repeats: int) -> float:
    """GFLOP/s of one n x n @ n x n `matmul()` (which blocks until done): median of `repeats`."""
    matmul()  # compile / warm up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        matmul()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


def peak_matmul_gflops(n: int = 2048, repeats: int = 5, dtype=jnp.float32, device=None) -> float:
    """A device's float32 matmul rate under XLA: median over `repeats` of one n x n @ n x n, in
    GFLOP/s (on `device`, by default JAX's default device)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    if device is not None:
        a, b = jax.device_put(a, device), jax.device_put(b, device)
    mm = jax.jit(jnp.matmul)
    return median_gflops(lambda: mm(a, b).block_until_ready(), n, repeats)


@functools.cache
def cpu_peak_flops() -> float:
    """The host's float32 matmul peak, FLOP/s, measured once per process (a second or two: a
    2048^3 product compiled and warmed up, then the median of 3). The CPU devices share the
    host's cores, so one device's product runs on all of them."""
    cpu = jax.local_devices(backend="cpu")[0]
    return peak_matmul_gflops(2048, repeats=3, device=cpu) * 1e9


# --------------------------------------------------------------------- a step's FLOPs

def _flops(cost) -> float | None:
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops >= 0 else None


def _partitions(compiled) -> int:
    """How many devices one call of `compiled` runs on (its input shardings' device sets)."""
    try:
        shardings = jax.tree.leaves(compiled.input_shardings)
        return max([len(s.device_set) for s in shardings] or [1])
    except Exception:  # noqa: BLE001 - a count for a log line; one device is the safe answer
        return 1


def step_flops(jitted_fn, *args, **kwargs) -> float | None:
    """FLOPs of one call `jitted_fn(*args, **kwargs)`, global (every device's share together),
    from XLA's cost analysis of the handler-free lowering (`ops.cpu.settings.disabled()`: a fresh
    trace in which every conv and pool is XLA's own, as on a GPU or TPU; the CPU handlers' custom
    calls would count 0). The unoptimised module's count (`Lowered.cost_analysis()`, no
    compilation); where that is unavailable, the compiled module's, times its device count.
    Nothing runs and donated arguments stay valid. None if XLA gives no count."""
    fn = jitted_fn if hasattr(jitted_fn, "lower") else jax.jit(jitted_fn)
    with cpu_settings.disabled():
        lowered = fn.lower(*args, **kwargs)
        flops = _flops(lowered.cost_analysis())
        if flops is None:
            compiled = lowered.compile()
            per_device = _flops(compiled.cost_analysis())
            flops = None if per_device is None else per_device * _partitions(compiled)
    return flops


# ------------------------------------------------------------------------------- MFU

def mfu(flops_per_step: float | None, steps: int, seconds: float, num_devices: int,
        peak_per_device: float | None) -> float | None:
    """Model FLOP utilisation: flops_per_step x steps / seconds / (num_devices x peak).
    None when a term is unknown or the time is not positive."""
    if not flops_per_step or not peak_per_device or seconds <= 0 or num_devices < 1:
        return None
    return flops_per_step * steps / seconds / (num_devices * peak_per_device)


def throughput(flops_per_step: float | None, steps: int, seconds: float, global_batch: int,
               num_devices: int, peak_per_device: float | None) -> dict[str, float]:
    """An epoch's scalars: step_time_s, images_per_s, and mfu where it is known."""
    if steps <= 0 or seconds <= 0:
        return {}
    out = {"step_time_s": seconds / steps, "images_per_s": steps * global_batch / seconds}
    utilisation = mfu(flops_per_step, steps, seconds, num_devices, peak_per_device)
    if utilisation is not None:
        out["mfu"] = utilisation
    return out
