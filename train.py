r"""Train HA-Net: flags, optional multi-process start-up, then `train_lib.train_and_evaluate`.

    python train.py --config=configs/default.py --workdir=/tmp/hanet_default
    python train.py --config=configs/busi.py --workdir=/tmp/busi \
        --config.data.root=/work/shared/data/hanet-processed/BUSI --config.batch_size=16

Every config key can be overridden with --config.KEY=VALUE; an unknown key is an error that
names it. Rerunning with the same --workdir resumes from its latest checkpoint. SIGTERM saves a
checkpoint at the next step boundary and exits with status 0.

Several processes (one per host, or several on one host for testing):
    python train.py ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
or, on a cloud TPU/GPU cluster that JAX can detect by itself, just --distributed.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and summaries.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (addresses auto-detected on "
    "clusters JAX knows, or taken from the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def _load_config_file(argv):
    """The config module's get_config() result, loaded from --config=PATH[:ARG] in argv."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        else:
            continue
        path, _, arg = path.partition(":")
        spec = importlib.util.spec_from_file_location("_config_for_flags", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    return None


def _unknown_overrides(argv) -> list[str]:
    config = _load_config_file(argv)
    if config is None:
        return []
    unknown = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node = config
        path = arg[2:].split("=", 1)[0]
        for part in path.split(".")[1:]:
            if not hasattr(node, "keys") or part not in node.keys():
                unknown.append(path)
                break
            node = node[part]
    return unknown


def parse_flags(argv):
    """absl flag parsing, with a clear error for overrides of keys the config does not have."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a bad value: absl's own message, without a traceback
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        sys.exit(1)
    except (AttributeError, KeyError) as e:
        try:
            unknown = _unknown_overrides(argv)
        except Exception:  # noqa: BLE001 - explaining is best effort; report the original
            unknown = []
        if not unknown:
            raise
        print(f"FATAL Flags parsing error: unknown config key(s): {', '.join(unknown)} "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        sys.exit(1)


class _QuietLibraries(std_logging.Filter):
    """Keeps Orbax's per-save INFO chatter out of the console; its warnings still show."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from hanet_jax.ops.cpu import devices as cpu_devices
    from hanet_jax.ops.cpu import host_memory

    # Before JAX starts its backend (hanet_jax/host_memory.py, cpu_devices.py): CPU-only hosts.
    kept = host_memory.keep_freed_host_memory_if_cpu_only()
    distributed = bool(_DISTRIBUTED.value or _COORDINATOR.value)
    if not distributed:
        try:
            cpu_devices.split_cpu_if_cpu_only(_CONFIG.value.batch_size)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    import jax

    if distributed:
        # CPU hosts need a collectives implementation; it does not affect GPU/TPU.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)
    if kept:
        logging.info("host malloc: freed memory kept mapped (%s=system to turn off)",
                     host_memory.ENV)

    from hanet_jax.train import loop as train_lib
    from hanet_jax.checkpoints.format import CheckpointError
    from hanet_jax.train.config import ConfigError
    from hanet_jax.data.layouts import DatasetError

    try:
        result = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, DatasetError, CheckpointError) as e:  # bad input: named, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # divergence: the message names the last good checkpoint
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if result.preempted:
        logging.warning("stopped by SIGTERM after a checkpoint; rerun to resume")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
