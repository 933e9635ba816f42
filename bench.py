"""Benchmark our HA-Net against the Keras original in one run: parameters, FLOPs, memory, speed.

    python bench.py --variant=full --batch_size=8 --json=/tmp/bench_full.json
    python bench.py --variant=baseline --image_size=64 --batch_size=2 --repeats=1 --no_keras

The command lives in hanet_jax/bench/cli.py (also installed as `hanet-bench`); `--help` lists
its flags.
"""

from hanet_jax.bench.cli import main, run  # noqa: F401

if __name__ == "__main__":
    run()
