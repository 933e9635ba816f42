"""`python -m hanet_jax.export`: the `hanet-export` command (hanet_jax/export/cli.py)."""

from hanet_jax.export.cli import run

if __name__ == "__main__":
    run()
