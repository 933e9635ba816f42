"""The training state, the optimiser and schedule built from a config, and `init_from`.

`TrainState` holds everything that changes on the device during training; the host-side rest
(early stopping, history, data position) lives in the checkpoint's JSON (train_checkpoints.py).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hanet_jax.checkpoints import format as checkpoints
from hanet_jax.train import keras_callbacks as plateau_lib
from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.train.losses import make_loss
from hanet_jax.models.hanet import HANet

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32: training steps done (= the next global batch index)
    params: Any
    batch_stats: Any
    opt_state: Any           # Adam moments (per-step)
    plateau: Any             # ReduceLROnPlateauState: its `scale` x learning_rate = lr in force
    rng: jax.Array           # uint32[2] base key; step s uses fold_in(rng, s) for dropout
    # {"params", "batch_stats"} averaged over steps (config.optimizer.ema_decay > 0), or None
    ema: Any = None

    @property
    def variables(self) -> dict:
        """The live weights: what the optimiser updates."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def eval_variables(self) -> dict:
        """What validation, model selection and export use: the EMA when there is one."""
        return self.variables if self.ema is None else self.ema


def ema_update(ema, live, step, decay: float):
    """One step of the weights' moving average; `step` is the number of updates done before
    this one. The decay warms up as min(decay, (1+t)/(10+t)) (TensorFlow's
    ExponentialMovingAverage with num_updates), so early averages are not dominated by the
    random initialisation."""
    t = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return jax.tree.map(lambda e, x: (d * e + (1.0 - d) * x).astype(x.dtype), ema, live)


# Cached so that equal configs give the same objects, and jitted steps keyed on them are reused.
@functools.lru_cache(maxsize=None)
def make_tx(learning_rate: float, b1: float, b2: float, eps: float,
            cosine_steps: int = 0, min_lr: float = 0.0,
            weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (AdamW's decoupled decay on kernels with weight_decay > 0); with cosine_steps > 0
    its rate follows a cosine from learning_rate to min_lr."""
    return plateau_lib.adam(learning_rate_schedule(learning_rate, cosine_steps, min_lr),
                            b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def learning_rate_schedule(learning_rate: float, cosine_steps: int = 0, min_lr: float = 0.0):
    """The per-step rate: a constant (the release: the plateau scales it per epoch) or a cosine
    over `cosine_steps` steps to min_lr."""
    if cosine_steps <= 0:
        return learning_rate
    return optax.cosine_decay_schedule(learning_rate, cosine_steps, alpha=min_lr / learning_rate)


@functools.lru_cache(maxsize=None)
def make_loss_fn(name: str):
    return make_loss(name)


def optimizer_from_config(opt, total_steps: int = 0) -> tuple[
        optax.GradientTransformation, plateau_lib.ReduceLROnPlateau, plateau_lib.EarlyStopping]:
    """(per-step Adam, once-per-epoch ReduceLROnPlateau, EarlyStopping) of config.optimizer.

    With opt.schedule == "cosine" Adam's rate decays over `total_steps` (the run's length) and
    the trainer leaves the plateau's scale at 1.
    """
    cosine_steps = 0
    if opt.schedule == "cosine":
        if total_steps <= 0:
            raise ValueError("optimizer.schedule=cosine needs the run's total_steps")
        cosine_steps = int(total_steps)
    tx = make_tx(float(opt.learning_rate), float(opt.b1), float(opt.b2), float(opt.eps),
                 cosine_steps, float(opt.min_lr), float(opt.weight_decay))
    plateau = plateau_lib.ReduceLROnPlateau(
        learning_rate=float(opt.learning_rate), factor=float(opt.plateau_factor),
        patience=int(opt.plateau_patience), min_delta=float(opt.plateau_min_delta),
        cooldown=int(opt.plateau_cooldown), min_lr=float(opt.min_lr))
    stopper = plateau_lib.EarlyStopping(min_delta=float(opt.early_stopping_min_delta),
                                        patience=int(opt.early_stopping_patience))
    return tx, plateau, stopper


def make_mesh(devices=None) -> Mesh:
    """One data-parallel axis over every device of every process."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Host values (the same on every process) -> global arrays replicated over the mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def to_host(tree):
    """Replicated global arrays -> numpy (works on every process)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                        else np.asarray(x), tree)


@functools.lru_cache(maxsize=8)
def _jit_init(model: HANet, image_size: int, tx, plateau, ema: bool = False):
    def init(seed):
        params_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init({"params": params_key},
                               jnp.zeros((1, image_size, image_size, 3), jnp.float32), train=False)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), plateau=plateau.init(), rng=dropout_key,
                          ema={"params": params, "batch_stats": batch_stats} if ema else None)
    return jax.jit(init)


def create_train_state(model: HANet, image_size: int, tx, plateau, seed: int,
                       mesh: Mesh, ema: bool = False) -> TrainState:
    """A fresh state, replicated over `mesh`; with `ema`, the average starts at the init.

    Computed on one device (the init program is then the same for any mesh: compiled once per
    model, size and optimiser), by process 0 only when there are several processes, which get
    its values by a broadcast (no process compiles or runs init but the first).
    """
    init = _jit_init(model, image_size, tx, plateau, ema)
    if jax.process_index() == 0:
        host = to_host(init(jax.device_put(np.int32(seed), jax.local_devices()[0])))
    else:
        host = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(init, seed))
    if jax.process_count() > 1:
        host = multihost_utils.broadcast_one_to_all(host)
    return replicate(host, mesh)


# ---------------------------------------------------------------------------------- init_from
def load_variables(directory: str) -> dict:
    """{"params", "batch_stats"} of an exported/ported checkpoint dir or a training workdir."""
    meta = checkpoints.read_meta(directory)  # CheckpointError naming the path
    kind = meta.get("kind")
    if kind in ("variables", "encoder"):  # "encoder": a ported ImageNet DenseNet-121
        return checkpoints.restore_variables(directory)
    if kind == "workdir":
        from hanet_jax.checkpoints.training import restore_best_variables
        return restore_best_variables(directory)
    raise CheckpointError(f"{directory}/{checkpoints.META_FILE}: unknown checkpoint kind {kind!r}")


def resolve_model_config(model_cfg: Mapping[str, Any], init_from: str) -> dict:
    """The model fields with `input_normalization="auto"` resolved, and the encoder's BatchNorm
    epsilon taken from the `init_from` checkpoint (it belongs to the weights: torchvision's is 1e-5).

    "auto" means what the `init_from` weights were trained with: ImageNet mean/std for an
    ImageNet encoder checkpoint, the recorded setting of an HA-Net checkpoint or workdir (a
    fine-tuned model keeps its preprocessing), and none without `init_from` (the release's raw
    [0, 1] input).
    """
    cfg = dict(model_cfg)
    meta = checkpoints.read_meta(init_from) if init_from else {}
    source = meta.get("model", {}) if isinstance(meta.get("model"), dict) else {}
    if cfg.get("input_normalization") == "auto":
        inherited = source.get("input_normalization", "none")
        cfg["input_normalization"] = "none" if inherited == "auto" else inherited
    if "encoder_epsilon" in source:
        cfg["encoder_epsilon"] = source["encoder_epsilon"]
    return cfg


def _flat(tree: Mapping) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()} if tree else {}


def _describe_mismatch(target: dict, source: dict, where: str) -> list[str]:
    problems = []
    missing = sorted(set(target) - set(source))
    extra = sorted(set(source) - set(target))
    shapes = sorted(k for k in set(target) & set(source)
                    if tuple(np.shape(target[k])) != tuple(np.shape(source[k])))
    for label, keys in (("missing from the checkpoint", missing),
                        ("not in the model", extra)):
        if keys:
            shown = ", ".join(f"{where}/{k}" for k in keys[:8])
            problems.append(f"{len(keys)} {label}: {shown}{' ...' if len(keys) > 8 else ''}")
    for k in shapes[:8]:
        problems.append(f"shape of {where}/{k}: model {tuple(np.shape(target[k]))}, checkpoint "
                        f"{tuple(np.shape(source[k]))}")
    if len(shapes) > 8:
        problems.append(f"... and {len(shapes) - 8} more shape mismatches")
    return problems


def merge_init(target: Mapping, source: Mapping, scope: str, source_name: str) -> dict:
    """`target` {"params", "batch_stats"} with the `scope` part replaced by `source`'s values.

    scope "all": source must hold the whole model, same paths and shapes.
    scope "encoder": only params["encoder"] and batch_stats["encoder"] are taken; the source may
    be a whole HANet tree or an encoder-only tree ({"params": {"encoder": ...}, ...}).
    Raises CheckpointError naming each mismatched path. Values are cast to the target dtypes.
    """
    if scope not in ("all", "encoder"):
        raise ValueError(f"config.init_scope must be 'all' or 'encoder', got {scope!r}")
    out, problems = {}, []
    for collection in ("params", "batch_stats"):
        tgt = dict(target.get(collection) or {})
        src = dict(source.get(collection) or {})
        if scope == "encoder":
            if "encoder" not in src and tgt.get("encoder"):
                problems.append(f"{collection}/encoder is missing (top-level keys: "
                                f"{sorted(src) or 'none'})")
                continue
            tgt_part, src_part = tgt.get("encoder", {}), src.get("encoder", {})
            where = f"{collection}/encoder"
        else:
            tgt_part, src_part, where = tgt, src, collection
        t, s = _flat(tgt_part), _flat(src_part)
        found = _describe_mismatch(t, s, where)
        if found:
            problems += found
            continue
        merged = {k: np.asarray(s[k]).astype(np.asarray(v).dtype) for k, v in t.items()}
        merged = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in merged.items()})
        if scope == "encoder":
            tgt = {**tgt, "encoder": merged} if merged else tgt
            out[collection] = tgt
        else:
            out[collection] = merged
    if problems:
        hint = ""
        if scope == "all" and set(source.get("params", {})) == {"encoder"}:
            hint = "\n  (the checkpoint holds an encoder only: use config.init_scope=encoder)"
        raise CheckpointError(f"config.init_from={source_name} does not fit the model "
                              f"(config.init_scope={scope}):\n  " + "\n  ".join(problems) + hint)
    return out


def apply_init_from(state: TrainState, directory: str, scope: str, mesh: Mesh) -> TrainState:
    """The state with params/batch_stats (all, or the encoder's) loaded from `directory`; an
    EMA restarts from the loaded weights."""
    source = load_variables(directory)
    merged = merge_init(to_host(state.variables), source, scope, directory)
    merged = replicate(merged, mesh)
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"],
                         ema=None if state.ema is None else merged)
