"""bench_lib.run on a tiny setting: the result has every field, with sane values (not timings)."""

import json
import math

from hanet_jax import bench_lib


def test_bench_tiny_result_shape(monkeypatch):
    # A one-layer-per-block encoder keeps compilation short; test_models checks the real counts.
    import functools
    import jax
    tiny = functools.partial(bench_lib.HANet, encoder_blocks=(1, 1, 1, 1))
    monkeypatch.setattr(bench_lib, "HANet", tiny)
    shapes = jax.eval_shape(lambda: tiny(variant="baseline").init(jax.random.key(0), jax.numpy.zeros((1, 64, 64, 3)),
                                                                  train=False))
    trainable, non_trainable = (bench_lib.count_leaves(shapes[k]) for k in ("params", "batch_stats"))
    r = bench_lib.run("baseline", batch_size=2, image_size=64, repeats=1, keras=False, matmul_n=256, fast_compile=True,
                      command="python bench.py --variant baseline --image_size 64 --batch_size 2 --repeats 1 --no_keras")
    json.loads(json.dumps(r))  # JSON-able
    assert set(r) >= {"setting", "params", "params_keras", "flops", "memory", "throughput", "peak_matmul_gflops",
                      "mfu_train", "device", "date", "command"}
    assert r["params"] == {"trainable": trainable, "non_trainable": non_trainable}
    assert r["params_keras"] is None
    f = r["flops"]
    assert set(f) >= {"jax_forward_gflops", "jax_train_step_gflops", "keras_profiler_forward_gflops",
                      "keras_conv_macs_g"}
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
    from hanet_jax import flops
    # A probe that timed no matmul would report an absurd rate; 2 CPU cores do not reach
    # 10 TFLOP/s, and even this small product runs above 0.01 GFLOP/s.
    assert 0.01 < flops.tf_peak_matmul_gflops(256, repeats=2) < 10_000


def test_bench_runs_ours_data_parallel_on_a_split_cpu():
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("from hanet_jax import cpu_devices; assert cpu_devices.split_cpu_if_cpu_only(8) == 2; "
            "import functools, json; from hanet_jax import bench_lib; "
            "bench_lib.HANet = functools.partial(bench_lib.HANet, encoder_blocks=(1, 1, 1, 1)); "  # a tiny encoder
            "r = bench_lib.run('baseline', batch_size=8, image_size=32, repeats=1, keras=False, matmul_n=128, "
            "fast_compile=True); print(bench_lib.markdown_table(r)); print(json.dumps(r))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", HANET_CPU_DEVICES="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["setting"]["jax_devices"] == 2 and "data-parallel over 2 XLA devices" in proc.stdout
    # FLOPs are the whole batch's (from the one-device program), not one shard's
    assert 2 * r["flops"]["jax_forward_gflops"] < r["flops"]["jax_train_step_gflops"]
    assert r["throughput"]["jax_train_img_s"] > 0 and r["throughput"]["jax_infer_img_s"] > 0


def test_bench_isolated_runs_each_side_in_its_own_process():
    # What bench.py does: each side built and timed in a worker process of its own, so the two
    # frameworks' thread pools do not share a process (docs/performance.md, round 10).
    import os
    r = bench_lib.run("baseline", batch_size=2, image_size=32, repeats=1, keras=True, matmul_n=128,
                      fast_compile=True, isolate=True, model_kwargs={"encoder_blocks": (1, 1, 1, 1)})
    json.loads(json.dumps(r))
    s = r["setting"]
    assert s["isolated"] is True
    assert len({os.getpid(), s["pids"]["jax"], s["pids"]["keras"]}) == 3
    t = r["throughput"]
    assert min(t["jax_train_img_s"], t["keras_train_img_s"], t["jax_infer_img_s"], t["keras_infer_img_s"]) > 0
    assert math.isclose(t["ratio_train"], t["jax_train_img_s"] / t["keras_train_img_s"])
    # the tiny encoder reached our worker; the Keras side is the whole release model
    assert 0 < r["params"]["trainable"] < r["params_keras"]["trainable"]
    assert r["peak_matmul_gflops"] > 0 and r["peak_matmul_gflops_tf"] > 0
    assert r["flops"]["keras_conv_macs_g"] > 0
    assert "each side in its own process" in bench_lib.markdown_table(r)


def test_bench_isolated_side_that_fails_is_named_with_its_traceback():
    import pytest
    with pytest.raises(RuntimeError, match=r"the jax side failed in its process(.|\n)*no_such_field"):
        bench_lib.run("baseline", batch_size=2, image_size=32, repeats=1, keras=False, matmul_n=128,
                      fast_compile=True, isolate=True, model_kwargs={"no_such_field": 1})
