"""Our Keras 3 rebuild of the released HA-Net notebook, for parity tests and benchmarks."""
