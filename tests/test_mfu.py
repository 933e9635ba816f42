"""MFU: the device table, float32 matmul modes, the CPU probe, a step's FLOPs, the arithmetic."""

import math
import time
import types

import jax
import jax.numpy as jnp
import pytest

from hanet_jax.train import mfu

TF = 1e12


def _device(kind, platform="gpu", cc=None):
    return types.SimpleNamespace(device_kind=kind, platform=platform, compute_capability=cc)


@pytest.mark.parametrize("kind, name", [
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"), ("NVIDIA A100-PCIE-40GB", "NVIDIA A100"),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
    ("NVIDIA H200", "NVIDIA H200 SXM"), ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),
    ("NVIDIA L4", "NVIDIA L4"), ("NVIDIA L40S", "NVIDIA L40S"),
    ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2"), ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe"),
    ("Tesla V100S-PCIE-32GB", "NVIDIA V100S PCIe"),
    ("TPU v4", "TPU v4"), ("TPU v5 lite", "TPU v5e"), ("TPU v5e", "TPU v5e"),
    ("TPU v5", "TPU v5p"), ("TPU v5p", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e (Trillium)"), ("TPU v6e", "TPU v6e (Trillium)"),
    ("TPU v3", "TPU v3 (per core)"),
])
def test_the_table_knows_common_device_kinds(kind, name):
    row = mfu.lookup(kind)
    assert row is not None and row.name == name
    assert row.bf16 >= row.f32 > 0 and row.source


@pytest.mark.parametrize("kind", ["TPU v4 lite", "TPU7x", "NVIDIA GeForce RTX 4090", "cpu",
                                  "NVIDIA L40", ""])
def test_unknown_kinds_match_nothing(kind):
    assert mfu.lookup(kind) is None


def test_gpu_peaks_follow_dtype_and_tf32(monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    a100 = _device("NVIDIA A100-SXM4-80GB", cc="8.0")
    # jax's default precision on an Ampere-or-later GPU: float32 matmuls as TF32
    peak = mfu.peak_flops(a100, "float32")
    assert peak.flops == 156 * TF and "TF32" in peak.source and "A100" in peak.source
    assert mfu.float32_matmul_mode(a100) == (
        "TF32 (jax_default_matmul_precision=None on an Ampere-or-later GPU)")
    assert mfu.peak_flops(a100, "bfloat16").flops == 312 * TF
    assert mfu.peak_flops(a100, jnp.bfloat16).flops == 312 * TF
    with jax.default_matmul_precision("highest"):
        assert mfu.peak_flops(a100, "float32").flops == 19.5 * TF
        assert mfu.float32_matmul_mode(a100).startswith("float32 (")
        assert "highest" in mfu.float32_matmul_mode(a100)
    with jax.default_matmul_precision("tensorfloat32"):
        assert mfu.peak_flops(a100, "float32").flops == 156 * TF
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    assert mfu.peak_flops(a100, "float32").flops == 19.5 * TF
    assert "NVIDIA_TF32_OVERRIDE=0" in mfu.float32_matmul_mode(a100)


def test_a_gpu_without_tf32_runs_float32(monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    v100 = _device("Tesla V100-SXM2-16GB", cc="7.0")
    assert mfu.peak_flops(v100, "float32").flops == 15.7 * TF
    assert mfu.float32_matmul_mode(v100).startswith("float32 (")
    assert "no TF32" in mfu.float32_matmul_mode(v100)
    # without compute_capability, the table says whether it has TF32
    assert mfu.f32_matmul(_device("NVIDIA H100 80GB HBM3")).kind == "tf32"
    assert mfu.peak_flops(_device("NVIDIA H100 80GB HBM3"), "float32").flops == 494.5 * TF


def test_tpu_float32_is_bf16_passes():
    v5e = _device("TPU v5 lite", platform="tpu")
    assert mfu.float32_matmul_mode(v5e) == "bf16 passes: 1 (the TPU default precision)"
    assert mfu.peak_flops(v5e, "float32").flops == 197 * TF
    assert mfu.peak_flops(v5e, "bfloat16").flops == 197 * TF
    with jax.default_matmul_precision("highest"):
        assert mfu.f32_matmul(v5e).passes == 6
        assert math.isclose(mfu.peak_flops(v5e, "float32").flops, 197 * TF / 6)
    with jax.default_matmul_precision("high"):  # bfloat16_3x
        assert math.isclose(mfu.peak_flops(v5e, "float32").flops, 197 * TF / 3)


def test_an_unknown_device_asks_for_the_override_and_the_override_wins():
    unknown = _device("NVIDIA GeForce RTX 4090", cc="8.9")
    peak = mfu.peak_flops(unknown, "float32")
    assert peak.flops is None and "config.peak_flops" in peak.source
    assert mfu.peak_flops(unknown, "float32", override=82.6e12) == (82.6e12, "config.peak_flops=8.26e+13")
    assert mfu.peak_flops(_device("NVIDIA A100-SXM4-80GB"), override=1e12).flops == 1e12
    cpu = jax.devices("cpu")[0]
    assert mfu.peak_flops(cpu, override=5e9).flops == 5e9  # no measurement needed


def test_on_the_cpu_the_measured_peak_is_shared_by_the_cpu_devices(monkeypatch):
    cpu = jax.devices("cpu")[0]
    assert mfu.float32_matmul_mode(cpu) == "float32 (CPU)"
    monkeypatch.setattr(mfu, "cpu_peak_flops", lambda: 120e9)
    n = len(jax.local_devices(backend="cpu"))
    peak = mfu.peak_flops(cpu, "float32")
    assert math.isclose(peak.flops, 120e9 / n) and "measured" in peak.source


def test_the_cpu_probe_is_measured_once_per_process_and_bench_uses_the_same_probe():
    from hanet_jax.bench import flops as bench_flops

    assert bench_flops.peak_matmul_gflops is mfu.peak_matmul_gflops
    first = mfu.cpu_peak_flops()
    t0 = time.perf_counter()
    assert mfu.cpu_peak_flops() == first  # cached
    assert time.perf_counter() - t0 < 0.01
    # 2 loaded CPU cores reach neither 10 TFLOP/s nor less than 0.1 GFLOP/s
    assert 1e8 < first < 1e13
    assert 0.01 < mfu.peak_matmul_gflops(128, repeats=1) < 10_000


def test_step_flops_of_a_matmul_is_2mnk_whatever_the_result_structure():
    m, k, n = 64, 32, 16
    a, b = jnp.ones((m, k)), jnp.ones((k, n))
    assert mfu.step_flops(jax.jit(lambda a, b: a @ b), a, b) == 2 * m * n * k
    # a dict and a list in the result, and a plain function (jitted here)
    assert mfu.step_flops(jax.jit(lambda a, b: {"y": [a @ b]}), a, b) == 2 * m * n * k
    assert mfu.step_flops(lambda a, b: a @ b, a, b) == 2 * m * n * k
    # abstract arguments: nothing is computed
    spec = jax.ShapeDtypeStruct((m, k), jnp.float32)
    assert mfu.step_flops(jax.jit(lambda a, b: a @ b), spec, b) == 2 * m * n * k


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_step_flops_of_a_valid_conv_is_its_closed_form_and_donation_is_harmless():
    x, w = jnp.ones((2, 9, 10, 3)), jnp.ones((3, 3, 3, 5))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")), donate_argnums=(0,))
    # 2 x output elements (2 x 7 x 8 x 5) x taps (3 x 3) x input channels (3)
    assert mfu.step_flops(conv, x, w) == 2 * (2 * 7 * 8 * 5) * (3 * 3) * 3
    assert float(x.sum()) == x.size  # lowering donated nothing


def test_step_flops_falls_back_to_the_compiled_count_times_its_devices():
    real = jax.jit(lambda a, b: a @ b)
    a, b = jnp.ones((8, 4)), jnp.ones((4, 2))

    class NoLoweredCost:
        def __init__(self, lowered):
            self.lowered = lowered

        def cost_analysis(self):
            return None

        def compile(self):
            return self.lowered.compile()

    wrapped = types.SimpleNamespace(lower=lambda *args: NoLoweredCost(real.lower(*args)))
    assert mfu.step_flops(wrapped, a, b) == 2 * 8 * 4 * 2


def test_step_flops_counts_the_handler_free_hanet_forward():
    # The tiny HA-Net of the training tests (one layer per dense block, 32x32); with the CPU
    # handlers on, their custom calls count 0 FLOPs, so the handler-free count is larger.
    from hanet_jax.models.hanet import HANet
    from hanet_jax.ops.cpu import conv as cpu_conv

    model = HANet(variant="full", encoder_blocks=(1, 1, 1, 1))
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                  train=False))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    handler_free = mfu.step_flops(forward, variables, x)
    lowered = forward.lower(variables, x)  # as a CPU training run lowers it
    with_handlers = mfu._flops(lowered.cost_analysis())
    assert handler_free >= with_handlers > 0
    if cpu_conv.active():
        assert "custom_call" in lowered.as_text()
        assert handler_free > 1.5 * with_handlers
    # what step_flops counts: the same jitted function traced afresh with the handlers off
    from hanet_jax.ops.cpu import settings
    with settings.disabled():
        handler_free_lowering = forward.lower(variables, x)
    assert "custom_call" not in handler_free_lowering.as_text()
    assert mfu._flops(handler_free_lowering.cost_analysis()) == handler_free


def test_mfu_arithmetic():
    # 1 TFLOP per step, 10 steps in 2 s on 4 devices of 1 TFLOP/s each: 5 TFLOP/s of 4
    assert mfu.mfu(1e12, 10, 2.0, 4, 1e12) == 1.25
    assert math.isclose(mfu.mfu(3e9, 100, 10.0, 2, 100e9), 0.15)
    for bad in [(None, 10, 2.0, 4, 1e12), (1e12, 10, 2.0, 4, None), (1e12, 10, 0.0, 4, 1e12),
                (1e12, 10, 2.0, 0, 1e12)]:
        assert mfu.mfu(*bad) is None
    out = mfu.throughput(3e9, 100, 10.0, 16, 2, 100e9)
    assert out == {"step_time_s": 0.1, "images_per_s": 160.0, "mfu": pytest.approx(0.15)}
    assert "mfu" not in mfu.throughput(3e9, 100, 10.0, 16, 2, None)
    assert mfu.throughput(3e9, 0, 0.0, 16, 2, 1e9) == {}
