"""HA-Net in JAX/Flax. `from hanet_jax import HANet`; the rooms are subpackages (docs/architecture.md)."""

__all__ = ["HANet"]


def __getattr__(name):
    # Lazy, so that `python -m hanet_jax.data.check --help` and the other light commands do not
    # import JAX and Flax just to start.
    if name == "HANet":
        from hanet_jax.models import HANet
        return HANet
    raise AttributeError(f"module 'hanet_jax' has no attribute {name!r}")
