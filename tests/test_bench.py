"""bench_lib.run on a tiny setting: the result has every field, with sane values (not timings)."""

import json
import math

import pytest

from hanet_jax.bench import keras_comparison as bench_lib


@pytest.mark.slow
def test_bench_tiny_result_shape():
    # A one-layer-per-block encoder keeps compilation short; test_models checks the real counts.
    import functools
    import jax
    from hanet_jax.models.hanet import HANet

    tiny = functools.partial(HANet, encoder_blocks=(1, 1, 1, 1))
    shapes = jax.eval_shape(lambda: tiny(variant="baseline").init(jax.random.key(0), jax.numpy.zeros((1, 64, 64, 3)),
                                                                  train=False))
    trainable, non_trainable = (bench_lib.count_leaves(shapes[k]) for k in ("params", "batch_stats"))
    r = bench_lib.run("baseline", batch_size=2, image_size=64, repeats=1, keras=False, matmul_n=256, fast_compile=True,
                      model_kwargs={"encoder_blocks": (1, 1, 1, 1)},
                      command="python bench.py --variant baseline --image_size 64 --batch_size 2 --repeats 1 --no_keras")
    json.loads(json.dumps(r))  # JSON-able
    assert set(r) >= {"setting", "params", "params_keras", "flops", "memory", "throughput", "peak_matmul_gflops",
                      "mfu_train", "device", "date", "command"}
    assert r["params"] == {"trainable": trainable, "non_trainable": non_trainable}
    assert r["params_keras"] is None
    f = r["flops"]
    assert set(f) >= {"jax_forward_gflops", "jax_train_step_gflops", "keras_profiler_forward_gflops",
                      "keras_conv_macs_g", "jax_forward_conv_gmacs"}
    # a multiply-accumulate is two of XLA's FLOPs, which also count BN, ReLU and pooling
    assert 0 < f["jax_forward_conv_gmacs"] < f["jax_forward_gflops"]
    # the direct convs' count, not a trace with the CPU handlers, whose custom calls count 0
    model = tiny(variant="baseline")
    variables = bench_lib.fast_init(model, (1, 64, 64, 3))
    x = jax.numpy.zeros((1, 64, 64, 3))
    from hanet_jax.bench import flops as flops_lib
    with_handlers = flops_lib.xla_flops(jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile())
    assert math.isclose(f["jax_forward_gflops"] * 1e9, bench_lib.forward_flops(model, variables, x), rel_tol=1e-3)
    assert f["jax_forward_gflops"] * 1e9 > 1.5 * with_handlers
    # the backward pass costs about twice the forward
    assert 0 < f["jax_forward_gflops"] and 2 * f["jax_forward_gflops"] < f["jax_train_step_gflops"] < 6 * f["jax_forward_gflops"]
    m = r["memory"]
    assert math.isclose(m["params_mb"], 4 * (trainable + non_trainable) / 2**20)
    assert m["train_step_peak_mb"] is None or m["train_step_peak_mb"] > m["params_mb"]
    t = r["throughput"]
    assert set(t) == {"jax_train_img_s", "keras_train_img_s", "jax_infer_img_s", "keras_infer_img_s",
                      "ratio_train", "ratio_infer"}
    assert t["jax_train_img_s"] > 0 and t["jax_infer_img_s"] > t["jax_train_img_s"]
    assert t["keras_train_img_s"] is None and t["ratio_train"] is None
    assert r["peak_matmul_gflops"] > 0 and 0 < r["mfu_train"] < 1.5
    assert r["peak_matmul_gflops_tf"] is None and r["machine_peak_gflops"] == r["peak_matmul_gflops"]
    u = r["utilisation"]
    assert u["jax_train"] == r["mfu_train"] and u["keras_train"] is None and u["keras_infer"] is None
    assert math.isclose(u["jax_infer"], f["jax_forward_gflops"] * t["jax_infer_img_s"] / r["peak_matmul_gflops"])
    assert r["ratio_at_peak"] == {"train": None, "infer": None}  # no Keras side to compare with
    assert r["device"]["platform"] == "cpu" and r["device"]["cpu_count"] >= 1
    table = bench_lib.markdown_table(r)
    assert "| train images/s (batch 2) |" in table and f"{trainable:,}" in table


def test_efficiency_utilisation_and_the_ratio_reachable_at_the_matmul_peak():
    # 200 GFLOP/s peak; 16 GFLOP per image forward: at most 12.5 images/s at the peak.
    t = {"jax_train_img_s": 1.0, "keras_train_img_s": 2.0, "jax_infer_img_s": 5.0, "keras_infer_img_s": 10.0}
    util, at_peak = bench_lib.efficiency({"train": 50.0, "infer": 16.0}, t, 200.0)
    assert util == {"jax_train": 0.25, "keras_train": 0.5, "jax_infer": 0.4, "keras_infer": 0.8}
    assert at_peak == {"train": 2.0, "infer": 1.25}  # 4 img/s / 2; 12.5 img/s / 10
    util, at_peak = bench_lib.efficiency({"infer": 16.0}, {"jax_infer_img_s": 5.0, "keras_infer_img_s": None}, 200.0)
    assert util == {"jax_infer": 0.4, "keras_infer": None} and at_peak == {"infer": None}
    assert bench_lib._pct(0.5123) == "51.2%" and bench_lib._pct(None) == "–"


def test_tf_matmul_probe_times_a_real_matmul():
    from hanet_jax.bench import flops
    # A probe that timed no matmul would report an absurd rate; 2 CPU cores do not reach
    # 10 TFLOP/s, and even this small product runs above 0.01 GFLOP/s.
    assert 0.01 < flops.tf_peak_matmul_gflops(256, repeats=2) < 10_000


@pytest.mark.slow
def test_bench_isolated_runs_each_side_in_its_own_process_ours_split_over_the_cpu(monkeypatch):
    # What bench.py does: each side built and timed in a worker process of its own, so the two
    # frameworks' thread pools do not share a process (docs/performance.md, round 10); ours
    # splits its worker's CPU into two devices and runs data-parallel, as train.py does.
    import os
    monkeypatch.setenv("HANET_CPU_DEVICES", "2")  # the spawned workers inherit the environment
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    r = bench_lib.run("baseline", batch_size=8, image_size=32, repeats=1, keras=True, matmul_n=128,
                      fast_compile=True, isolate=True, model_kwargs={"encoder_blocks": (1, 1, 1, 1)})
    json.loads(json.dumps(r))
    s = r["setting"]
    assert s["isolated"] is True and s["jax_devices"] == 2
    assert len({os.getpid(), s["pids"]["jax"], s["pids"]["keras"]}) == 3
    # FLOPs are the whole batch's (from the one-device program), not one shard's
    assert 2 * r["flops"]["jax_forward_gflops"] < r["flops"]["jax_train_step_gflops"]
    t = r["throughput"]
    assert min(t["jax_train_img_s"], t["keras_train_img_s"], t["jax_infer_img_s"], t["keras_infer_img_s"]) > 0
    assert math.isclose(t["ratio_train"], t["jax_train_img_s"] / t["keras_train_img_s"])
    # the tiny encoder reached our worker; the Keras side is the whole release model
    assert 0 < r["params"]["trainable"] < r["params_keras"]["trainable"]
    assert r["peak_matmul_gflops"] > 0 and r["peak_matmul_gflops_tf"] > 0
    assert r["flops"]["keras_conv_macs_g"] > 0
    table = bench_lib.markdown_table(r)
    assert "data-parallel over 2 XLA devices" in table and "each side in its own process" in table


def test_bench_isolated_side_that_fails_is_named_with_its_traceback():
    import pytest
    with pytest.raises(RuntimeError, match=r"the jax side failed in its process(.|\n)*no_such_field"):
        bench_lib.run("baseline", batch_size=2, image_size=32, repeats=1, keras=False, matmul_n=128,
                      fast_compile=True, isolate=True, model_kwargs={"no_such_field": 1})


@pytest.mark.slow
def test_serving_latency_times_flax_model_jax_and_onnxruntime_in_one_process(monkeypatch):
    # bench.py's last table: each runtime at each batch size, on the same weights (a tiny encoder).
    from hanet_jax.bench import serving_latency

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # the worker drops it
    r = serving_latency.run("baseline", (64, 64), batch_sizes=(1, 3), repeats=1,
                            model_kwargs={"encoder_blocks": (1, 1, 1, 1)})
    json.loads(json.dumps(r))
    assert set(r["ms_per_call"]) == {"batch_1", "batch_3"}
    for key, ms in r["ms_per_call"].items():
        assert set(ms) == set(serving_latency.RUNTIMES) and min(ms.values()) > 0
        assert max(r["largest_difference_from_flax"][key].values()) <= 1e-4  # the same function
    table = serving_latency.markdown_table(r)
    assert "\n| 1 | " in table and "\n| 3 | " in table and "onnxruntime" in table
