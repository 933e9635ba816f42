"""What the per-shape 3x3 conv scripts share: the shapes that lead the bench's trace and XLA's
direct conv (NHWC input, HWIO kernel, stride 1, SAME)."""
import jax

DN = ("NHWC", "HWIO", "NHWC")
# (H, W, C_in, C_out): the decoder/SFEB and dense-layer 3x3 convs at 256x256 input.
SHAPES = [(32, 32, 256, 256), (64, 64, 128, 128), (64, 64, 128, 32), (128, 128, 64, 64),
          (64, 64, 192, 64), (32, 32, 384, 128), (16, 16, 128, 32)]


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
