"""The accelerator check from a checkout: `python scripts/check_accelerator.py [--small] [--out F]`.

The same as `hanet-check-accelerator` and `python -m hanet_jax.bench.accelerator_check`
(hanet_jax/bench/accelerator_check.py says what it measures).
"""

import sys

from hanet_jax.bench.accelerator_check import main

if __name__ == "__main__":
    sys.exit(main())
