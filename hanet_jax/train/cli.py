r"""Train HA-Net: flags, optional multi-process start-up, then `train_lib.train_and_evaluate`.

    python train.py --config=configs/default.py --workdir=/tmp/hanet_default
    python train.py --config=configs/busi.py --workdir=/tmp/busi \
        --config.data.root=/work/shared/data/hanet-processed/BUSI --config.batch_size=16

Every config key can be overridden with --config.KEY=VALUE; an unknown key is an error that
names it. Rerunning with the same --workdir resumes from its latest checkpoint. SIGTERM (a
scheduler's preemption) or SIGINT (Ctrl-C) saves a checkpoint at the next step boundary and exits
with status 143 or 130, as a shell reports those signals: a restarting scheduler (a Kubernetes
Job, Slurm's --requeue) sees a failure and reruns the same command, which resumes.
`hanet-train` is the same command.

Several processes (one per host, or several on one host for testing):
    python train.py ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
or, on a cloud TPU/GPU cluster that JAX can detect by itself, just --distributed.

Exit status: 0 when done, 143 / 130 when stopped by SIGTERM / SIGINT after a checkpoint, 1 when
training diverged, 2 on a bad command line, config or dataset.
"""

from __future__ import annotations

import functools
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hanet_jax import command_line

PROG = "python train.py"


def _define_flags(fv: flags.FlagValues, *, argv: list[str]) -> None:
    # config_flags finds the --config.KEY overrides in the argv it is given (sys.argv otherwise).
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:PROFILE]).",
                                    flag_values=fv, lock_config=True, sys_argv=[PROG, *argv])
    flags.mark_flag_as_required("config", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and summaries.",
                        flag_values=fv, required=True)
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() (addresses auto-detected on clusters JAX "
                      "knows, or taken from the three flags below).", flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Number of processes.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "Index of this process.", flag_values=fv)


def _unknown_config_key(error: Exception, argv: list[str]) -> str | None:
    """The override that ml_collections' KeyError (an unknown key under a locked config) is
    about, with its hint; None when no --config.KEY override names the missing key."""
    inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error
    text = str(inner.args[0]) if inner.args else ""  # "'vairant'\nDid you mean ..."
    key, _, hint = text.partition("\n")
    key = key.strip("'\"")
    for arg in argv:
        path = arg.lstrip("-").split("=", 1)[0]
        if path.startswith("config.") and key in path.split(".")[1:]:
            return f"unknown config key {path} (in {arg})" + (f". {hint.strip()}" if hint.strip() else "")
    return None


def parse(argv: list[str]):
    """The parsed flags (`.config`: the config with its overrides applied, `.workdir`, ...)."""
    command = command_line.Command(
        PROG, __doc__, functools.partial(_define_flags, argv=argv),
        synopsis="--config=FILE[:PROFILE] --workdir=DIR [--config.KEY=VALUE ...] "
                 "[--flag=value ...]")
    try:
        return command.parse(argv)
    except (AttributeError, KeyError) as e:  # a --config.KEY the locked config does not have
        message = _unknown_config_key(e, argv)
        if message is None:  # something else, e.g. a bug in the config file: its traceback
            raise
        command.usage_error(message)


class _QuietLibraries(std_logging.Filter):
    """Keeps Orbax's per-save INFO chatter out of the console; its warnings still show."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv: list[str] | None = None) -> int:
    args = parse(command_line.argv_or_sys(argv))
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from hanet_jax.ops.cpu import devices as cpu_devices
    from hanet_jax.ops.cpu import host_memory

    # Before JAX starts its backend (hanet_jax/ops/cpu/host_memory.py, devices.py): CPU-only hosts.
    kept = host_memory.keep_freed_host_memory_if_cpu_only()
    distributed = bool(args.distributed or args.coordinator_address)
    if not distributed:
        try:
            cpu_devices.split_cpu_if_cpu_only(args.config.batch_size)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    import jax

    if distributed:
        # CPU hosts need a collectives implementation; it does not affect GPU/TPU.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)
    if kept:
        logging.info("host malloc: freed memory kept mapped (%s=system to turn off)",
                     host_memory.ENV)

    from hanet_jax.checkpoints.format import CheckpointError
    from hanet_jax.data.layouts import DatasetError
    from hanet_jax.train import loop as train_lib
    from hanet_jax.train.config import ConfigError

    try:
        result = train_lib.train_and_evaluate(args.config, args.workdir)
    except (ConfigError, DatasetError, CheckpointError) as e:  # bad input: named, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # divergence: the message names the last good checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.preempted:
        logging.warning("stopped by %s after a checkpoint; exit status %d; rerun the same command to "
                        "resume", result.summary["signal"], result.exit_status)
        return result.exit_status
    return 0


def _absl_defaults(argv: list[str]) -> list[str]:
    """app.run's flags parser: absl's own flags (logging) keep their defaults; main parses ours."""
    flags.FLAGS(argv[:1])
    return argv


def run() -> None:
    """The `hanet-train` console script: absl's start-up (its logging handler, INFO level, the
    faulthandler), then main."""
    app.run(lambda argv: main(argv[1:]), flags_parser=_absl_defaults)
