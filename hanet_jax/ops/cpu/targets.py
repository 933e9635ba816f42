"""The XLA custom-call target names of our CPU handlers, in one place.

Each handler module registers its targets under these names (build.load_handlers), and the
lowering tests take the names they forbid in a GPU or TPU graph from `ALL`.
"""

CONV3X3_WEIGHT_GRAD = "hanet_conv3x3_weight_grad"
CONV1X1_WEIGHT_GRAD = "hanet_conv1x1_weight_grad"
WINOGRAD_CONV3X3 = "hanet_winograd_conv3x3"
WINOGRAD_CONV3X3_AFFINE_RELU = "hanet_winograd_conv3x3_affine_relu"
MAXPOOL3X3S2 = "hanet_maxpool3x3s2"
MAXPOOL3X3S2_GRAD = "hanet_maxpool3x3s2_grad"
MAXPOOL3X3S2_OF_RELU = "hanet_maxpool3x3s2_of_relu"

# jax's custom call around a `custom_partitioning` function: under a mesh of several devices our
# batch-sharded handlers (partitioning.py) appear in the StableHLO as this, their names hidden in
# a callback. Nothing else of ours uses custom_partitioning.
PARTITIONED = "CustomSPMDPartitioning"

ALL = (CONV3X3_WEIGHT_GRAD, CONV1X1_WEIGHT_GRAD, WINOGRAD_CONV3X3, WINOGRAD_CONV3X3_AFFINE_RELU,
       MAXPOOL3X3S2, MAXPOOL3X3S2_GRAD, MAXPOOL3X3S2_OF_RELU)
# What a GPU or TPU graph must never hold.
CPU_ONLY = (*ALL, PARTITIONED)
