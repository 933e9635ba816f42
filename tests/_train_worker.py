"""Runs `train_and_evaluate` on the tests' tiny config in a fresh process (started by the tests).

    python tests/_train_worker.py --workdir W --out OUT.npz [--overrides JSON]
        [--num_processes N --process_id I --port P]   # jax.distributed on 127.0.0.1 (gloo)
        [--sigterm_handshake PREFIX [--sigterm_step N] [--sigterm_process I]]   # see below
        [--steps_only N]                              # N bare training steps instead
        [--restore_only]          # restore the workdir's latest checkpoint as train.py would
        [--log_info]              # absl INFO lines on stderr, as train.py prints them

The device count comes from XLA_FLAGS, set by the parent. Writes the final state's params and
batch_stats to OUT.npz and the run's summary to OUT.npz.json.

--sigterm_handshake: before training step N (default 0) the worker (process I only, default 0)
writes PREFIX.ready and waits until PREFIX.sent exists; the test sends a signal in between, so it
arrives while training, at a known step, after the handler is installed. The worker exits with
train.py's status: 0, or 143 / 130 when a SIGTERM / SIGINT stopped the run.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overrides", default="{}")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--sigterm_handshake")
    parser.add_argument("--sigterm_step", type=int, default=0)
    parser.add_argument("--sigterm_process", type=int, default=0)
    parser.add_argument("--steps_only", type=int, default=0,
                        help="only run this many training steps (no train_and_evaluate)")
    parser.add_argument("--restore_only", action="store_true",
                        help="write the restored train state's leaves to OUT (no training)")
    parser.add_argument("--log_info", action="store_true")
    args = parser.parse_args()

    import jax
    if args.log_info:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)

    if args.num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                                   process_id=args.process_id)

    import _train_helpers as helpers
    from hanet_jax.train import loop as train_lib

    hook = None
    if args.sigterm_handshake:
        prefix = args.sigterm_handshake

        def hook(step, batch):
            if step == args.sigterm_step and jax.process_index() == args.sigterm_process:
                Path(f"{prefix}.ready").touch()
                deadline = time.time() + 300
                while not os.path.exists(f"{prefix}.sent") and time.time() < deadline:
                    time.sleep(0.05)
            return batch

    config = helpers.tiny_config(**json.loads(args.overrides))
    if args.steps_only:
        losses, params = helpers.run_steps(config, args.steps_only)
        np.savez(args.out, **params)
        Path(f"{args.out}.json").write_text(json.dumps({"losses": losses,
                                                         "devices": jax.device_count()}))
        return
    if args.restore_only:
        _restore_only(config, args.workdir, args.out)
        return
    result = train_lib.train_and_evaluate(config, args.workdir, batch_hook=hook)
    helpers.save_result(args.out, result.state, {**result.summary, "preempted": result.preempted,
                                                 "process_index": jax.process_index()})
    return result.exit_status


def _restore_only(config, workdir, out):
    """The train state (step, params, BatchNorm statistics, optimiser, plateau, RNG) that
    resuming WORKDIR on this process's devices starts from, built and restored as
    `train_and_evaluate` does; its leaves go to OUT.npz, the devices they sit on to OUT.npz.json."""
    import flax
    import jax
    from flax import traverse_util

    from hanet_jax.checkpoints import training as ckpt
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import make_mesh, to_host
    from hanet_jax.train.state import abstract_train_state

    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    like = abstract_train_state(model, config.model.image_size, tx, plateau, make_mesh(),
                                ema=float(config.optimizer.ema_decay) > 0)
    with ckpt.make_manager(workdir, read_only=True) as manager:
        state, meta = ckpt.restore_latest(manager, like)
    leaves = traverse_util.flatten_dict(flax.serialization.to_state_dict(to_host(state)), sep="/")
    arrays = {k: np.asarray(v) for k, v in leaves.items()}
    np.savez(out, **{k: v for k, v in arrays.items() if v.dtype != object})  # not empty nodes
    placed = {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state.params)}
    Path(f"{out}.json").write_text(json.dumps({"devices": jax.device_count(),
                                               "param_devices": sorted(placed),
                                               "saved_devices": meta["devices"]}))


if __name__ == "__main__":
    raise SystemExit(main())
