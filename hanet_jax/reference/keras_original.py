"""Keras 3 rebuild of the released HA-Net notebook (ground truth: ``shared/spec/keras-original.md``).

This is *our* rebuild of the released Keras model, used as the reference for parity tests, for
porting release weight files (``model.save_weights("x.weights.h5")``) and for cost figures. It
reproduces the release including its quirks:

* encoder: ``keras.applications.DenseNet121(include_top=False, weights=None)`` (never downloads);
  skips ``conv1_bn`` (BN output *before* its ReLU), ``pool1``, ``pool2_pool``, ``pool3_pool``,
  and the final ``relu`` (H/32 x W/32 x 1024);
* bottleneck ConvBlock: Conv2D(256, 3, same, he_normal, activation=relu) -> BatchNorm
  (conv -> ReLU -> BN order);
* TAM: GSA with *raw reshapes* (not transposes) and a learned (HW, HW) matrix ``W``; learned
  row/column position embeddings; SDPA without projections (Q = K = V = E + pe), dropout 0.1 on
  the attention weights in training only; TAM output ``T = G + S`` (a sum);
* decoder: 4 x [nearest UpSampling2D(2) -> SFEB -> concat [skip, sfeb] -> Conv2D(relu) -> BN],
  then UpSampling2D -> Conv2D(16, relu) -> BN -> BN (doubled) -> Conv2D(1, 1, sigmoid).

Weight-file layout (Keras 3 ``saving_lib``): ``layers/<snake_case_class_name>[_<i>]/vars/<j>``
with ``<i>`` counting layers of the same class in ``model.layers`` order, e.g. ``conv2d_120``
(the bottleneck conv, right after DenseNet's 120 convs), ``batch_normalization_121``,
``global_spatial_attention/vars/0`` (= ``W``), ``global_spatial_attention/proj_key/vars/0``,
``position_encoding/h_embedding_layer/vars/0``. A ``full`` file holds 727 arrays.

Note on ``model.layers`` order: for a functional model it is *not* creation order; Keras sorts
operations by depth from the output and breaks ties by DFS order from the output. Within an SFEB
the context conv (``Fc``, 3x3, 2C->C) and the gate conv (``Fcc``, 1x1, C->C) sit at equal depth;
because the release writes ``I + Fc * Fcc`` the ``Fc`` branch is visited first, so the per-stage
order is ``sfeb_conv, sfeb_ctx_conv, sfeb_gate_conv, <stage conv>`` (and the same for the BNs).
``keras_weight_paths(model)`` returns the live-name -> file-group map.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

try:
    import keras  # noqa: E402
    from keras import layers, ops  # noqa: E402
except ImportError as e:  # TensorFlow and Keras are optional; the reference rebuild needs them
    raise ImportError("the Keras original (hanet_jax.reference.keras_original) needs Keras and "
                      "TensorFlow: pip install 'hanet-jax[tf]'") from e

__all__ = [
    "VARIANTS",
    "SKIP_LAYER_NAMES",
    "DECODER_STAGES",
    "DECODER_LAYER_NAMES",
    "BOTTLENECK_LAYER_NAMES",
    "HEAD_LAYER_NAMES",
    "GlobalSpatialAttention",
    "PositionEncoding",
    "ScaledDotProductAttention",
    "build_keras_hanet",
    "count_params",
    "intermediate_model",
    "randomize_weights",
    "conv_macs",
    "keras_weight_paths",
]

VARIANTS = ("full", "no_tam", "no_tam_no_sfeb", "baseline")

#: DenseNet-121 layer names whose outputs the decoder uses.
SKIP_LAYER_NAMES = {
    "conv1_bn": "conv1_bn",  # 1/2 res, 64 ch, BN output *before* ReLU
    "pool1": "pool1",  # 1/4 res, 64 ch
    "pool2_pool": "pool2_pool",  # 1/8 res, 128 ch
    "pool3_pool": "pool3_pool",  # 1/16 res, 256 ch
    "features": "relu",  # 1/32 res, 1024 ch (DenseNet final bn -> relu)
}

#: Decoder stages, numbered from the bottleneck: (stage index, skip layer name, filters).
DECODER_STAGES = ((1, "pool3_pool", 256), (2, "pool2_pool", 128), (3, "pool1", 64), (4, "conv1_bn", 32))

#: Bottleneck / TAM layer names (``full``; ``no_tam`` keeps only the ConvBlock, ``baseline`` none).
BOTTLENECK_LAYER_NAMES = {
    "conv": "bottleneck_conv",  # Conv2D(256, 3, same, he_normal, relu)         -> E_pre
    "bn": "bottleneck_bn",  # BatchNormalization (eps 1e-3)                     -> E
    "gsa": "gsa",  # GlobalSpatialAttention(in_channel=256)                     -> G
    "pe": "position_encoding",  # PositionEncoding(in_dim=(H/32, W/32), out_dim=128) -> pe
    "pe_add": "tam_pe_add",  # Add: S0 = E + pe
    "sdpa": "sdpa",  # ScaledDotProductAttention                                -> S
    "tam_sum": "tam_sum",  # Add: T = G + S
}


def _stage_names(i: int) -> dict:
    p = f"dec{i}"
    return {
        "up": f"{p}_up",  # UpSampling2D(2), nearest                         -> I
        # SFEB on I (C channels):
        "sfeb_conv": f"{p}_sfeb_conv",  # Conv2D(C, 3, same, glorot, bias)
        "sfeb_bn": f"{p}_sfeb_bn",  # BN
        "sfeb_relu": f"{p}_sfeb_relu",  # ReLU                              -> F
        "sfeb_gmp": f"{p}_sfeb_gmp",  # GlobalMaxPooling2D(keepdims)
        "sfeb_gap": f"{p}_sfeb_gap",  # GlobalAveragePooling2D(keepdims)
        "sfeb_pool_concat": f"{p}_sfeb_pool_concat",  # Concatenate [max, avg] -> P (1x1x2C)
        "sfeb_ctx_conv": f"{p}_sfeb_ctx_conv",  # Conv2D(C, 3, same, glorot, bias)
        "sfeb_ctx_bn": f"{p}_sfeb_ctx_bn",  # BN
        "sfeb_ctx_relu": f"{p}_sfeb_ctx_relu",  # ReLU                      -> Fc
        "sfeb_gate_gap": f"{p}_sfeb_gate_gap",  # GlobalAveragePooling2D(keepdims) of I
        "sfeb_gate_conv": f"{p}_sfeb_gate_conv",  # Conv2D(C, 1, glorot, bias)
        "sfeb_gate_bn": f"{p}_sfeb_gate_bn",  # BN
        "sfeb_gate_sigmoid": f"{p}_sfeb_gate_sigmoid",  # sigmoid           -> Fcc
        "sfeb_mul": f"{p}_sfeb_mul",  # Multiply [Fc, Fcc]
        "sfeb_out": f"{p}_sfeb_out",  # Add [I, Fc*Fcc]                    -> SFEB output
        # stage tail:
        "concat": f"{p}_concat",  # Concatenate [skip, sfeb_out]
        "conv": f"{p}_conv",  # Conv2D(filters, 3, same, he_normal, relu)
        "bn": f"{p}_bn",  # BN
    }


#: ``DECODER_LAYER_NAMES[i][role]`` -> layer name for stage i in 1..4 (see :func:`_stage_names`).
DECODER_LAYER_NAMES = {i: _stage_names(i) for i, _, _ in DECODER_STAGES}

HEAD_LAYER_NAMES = {
    "up": "head_up",  # UpSampling2D(2), nearest
    "conv": "head_conv",  # Conv2D(16, 3, same, he_normal, relu)
    "bn1": "head_bn1",  # BN
    "bn2": "head_bn2",  # BN (the release stacks two)
    "output": "output_conv",  # Conv2D(1, 1, sigmoid, glorot) -> probabilities
}


# --------------------------------------------------------------------------------------------
# Custom layers
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="hanet")
class GlobalSpatialAttention(layers.Layer):
    """Global spatial attention of the release (GSA), with its raw reshapes.

    For an input ``E`` of shape [B, H, W, C] (C = ``in_channel``, N = H*W, C' = C // 8)::

        q = reshape(proj_query(E), [B, N, C'])      # 1x1 conv, bias, he_normal
        k = reshape(proj_key(E),   [B, C', N])      # raw reshape of the NHWC buffer, NOT a transpose
        A = softmax(q @ k, axis=-1)                 # [B, N, N]
        v = reshape(proj_value(E), [B, C, N])       # raw reshape, NOT a transpose
        G = reshape((v @ A) @ W, [B, H, W, C]) + E  # W: trainable [N, N], random_normal(0.05)

    Weights: own ``W`` (file ``vars/0``); sublayers ``proj_query``, ``proj_key``, ``proj_value``
    (each ``vars/0`` kernel [1, 1, C, out], ``vars/1`` bias).
    """

    def __init__(self, in_channel=256, **kwargs):
        super().__init__(**kwargs)
        self.in_channel = int(in_channel)
        red = self.in_channel // 8
        self.proj_query = layers.Conv2D(red, 1, use_bias=True, kernel_initializer="he_normal", name="proj_query")
        self.proj_key = layers.Conv2D(red, 1, use_bias=True, kernel_initializer="he_normal", name="proj_key")
        self.proj_value = layers.Conv2D(
            self.in_channel, 1, use_bias=True, kernel_initializer="he_normal", name="proj_value"
        )

    def build(self, input_shape):
        _, h, w, c = input_shape
        if h is None or w is None:
            raise ValueError("GlobalSpatialAttention needs a static spatial size (W is [HW, HW]).")
        if c != self.in_channel:
            raise ValueError(f"expected {self.in_channel} channels, got {c}")
        n = int(h) * int(w)
        self.W = self.add_weight(
            name="W",
            shape=(n, n),
            initializer=keras.initializers.RandomNormal(stddev=0.05),
            trainable=True,
        )
        self.proj_query.build(input_shape)
        self.proj_key.build(input_shape)
        self.proj_value.build(input_shape)

    def call(self, x):
        _, h, w, c = x.shape
        n = h * w
        red = self.in_channel // 8
        q = ops.reshape(self.proj_query(x), (-1, n, red))
        k = ops.reshape(self.proj_key(x), (-1, red, n))
        a = ops.softmax(ops.matmul(q, k), axis=-1)
        v = ops.reshape(self.proj_value(x), (-1, c, n))
        out = ops.matmul(ops.matmul(v, a), self.W)
        return ops.reshape(out, (-1, h, w, c)) + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "in_channel": self.in_channel}


@keras.saving.register_keras_serializable(package="hanet")
class PositionEncoding(layers.Layer):
    """Learned 2-D position encoding of the release (PE).

    ``h_embedding_layer = Embedding(in_dim_h, out_dim)``, ``w_embedding_layer =
    Embedding(in_dim_w, out_dim)`` (Keras default init: uniform in [-0.05, 0.05]). For an input
    of shape [B, H, W, *] (H <= in_dim_h, W <= in_dim_w)::

        pe[b, h, w] = concat(h_embedding[h], w_embedding[w])   # 2*out_dim channels, same for all b

    The layer returns ``pe`` broadcast to [B, H, W, 2*out_dim]; the model adds it to ``E``
    (``S0 = E + pe``) with a separate ``Add`` layer. ``in_dim`` is an int (square grid, as in the
    release: 8) or an (in_dim_h, in_dim_w) pair for non-square inputs.
    """

    def __init__(self, in_dim=8, out_dim=128, **kwargs):
        super().__init__(**kwargs)
        if isinstance(in_dim, (list, tuple)):
            in_h, in_w = (int(d) for d in in_dim)
        else:
            in_h = in_w = int(in_dim)
        self.in_dim = in_dim if isinstance(in_dim, int) else (in_h, in_w)
        self.in_dim_h, self.in_dim_w = in_h, in_w
        self.out_dim = int(out_dim)
        self.h_embedding_layer = layers.Embedding(in_h, self.out_dim, name="h_embedding_layer")
        self.w_embedding_layer = layers.Embedding(in_w, self.out_dim, name="w_embedding_layer")

    def build(self, input_shape):
        self.h_embedding_layer.build((None,))
        self.w_embedding_layer.build((None,))

    def call(self, x):
        _, h, w, _ = x.shape
        rows = self.h_embedding_layer(ops.arange(h, dtype="int32"))  # [H, D]
        cols = self.w_embedding_layer(ops.arange(w, dtype="int32"))  # [W, D]
        rows = ops.broadcast_to(ops.expand_dims(rows, 1), (h, w, self.out_dim))
        cols = ops.broadcast_to(ops.expand_dims(cols, 0), (h, w, self.out_dim))
        pe = ops.concatenate([rows, cols], axis=-1)  # [H, W, 2D]
        b = ops.shape(x)[0]
        return ops.broadcast_to(ops.expand_dims(pe, 0), (b, h, w, 2 * self.out_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[2], 2 * self.out_dim)

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "out_dim": self.out_dim}


@keras.saving.register_keras_serializable(package="hanet")
class ScaledDotProductAttention(layers.Layer):
    """Projection-free scaled dot-product self-attention of the release (SDPA). No weights.

    For ``S0`` of shape [B, H, W, C] (N = H*W), with Q = K = V = reshape(S0, [B, N, C])::

        A = softmax(Q @ K^T / sqrt(C), axis=-1)     # sqrt(256) = 16 in the release
        A = Dropout(0.1)(A)                          # training only (attribute ``dropout``)
        S = reshape(A @ V, [B, H, W, C])
    """

    def __init__(self, dropout_rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.dropout_rate = float(dropout_rate)
        self.dropout = layers.Dropout(self.dropout_rate, name="dropout")

    def build(self, input_shape):
        pass

    def call(self, x, training=None):
        _, h, w, c = x.shape
        n = h * w
        s = ops.reshape(x, (-1, n, c))
        scores = ops.matmul(s, ops.transpose(s, (0, 2, 1))) / float(np.sqrt(c))
        attn = ops.softmax(scores, axis=-1)
        attn = self.dropout(attn, training=training)
        return ops.reshape(ops.matmul(attn, s), (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dropout_rate": self.dropout_rate}


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _sfeb(x, names: dict, f_padding: str = "same"):
    """SFEB of the release on input I (C channels): ``out = I + Fc * Fcc``.

    F   = ReLU(BN(Conv3x3(C, padding=f_padding)(I)))    # only feeds the global pools
    P   = concat(GlobalMax(F), GlobalAvg(F))            # keepdims: 1x1x2C
    Fc  = ReLU(BN(Conv3x3(C, 'same')(P)))
    Fcc = sigmoid(BN(Conv1x1(C)(GlobalAvg(I))))
    """
    c = x.shape[-1]
    f = layers.Conv2D(c, 3, padding=f_padding, name=names["sfeb_conv"])(x)
    f = layers.BatchNormalization(name=names["sfeb_bn"])(f)
    f = layers.Activation("relu", name=names["sfeb_relu"])(f)
    p_max = layers.GlobalMaxPooling2D(keepdims=True, name=names["sfeb_gmp"])(f)
    p_avg = layers.GlobalAveragePooling2D(keepdims=True, name=names["sfeb_gap"])(f)
    p = layers.Concatenate(axis=-1, name=names["sfeb_pool_concat"])([p_max, p_avg])
    fc = layers.Conv2D(c, 3, padding="same", name=names["sfeb_ctx_conv"])(p)
    fc = layers.BatchNormalization(name=names["sfeb_ctx_bn"])(fc)
    fc = layers.Activation("relu", name=names["sfeb_ctx_relu"])(fc)
    g = layers.GlobalAveragePooling2D(keepdims=True, name=names["sfeb_gate_gap"])(x)
    fcc = layers.Conv2D(c, 1, name=names["sfeb_gate_conv"])(g)
    fcc = layers.BatchNormalization(name=names["sfeb_gate_bn"])(fcc)
    fcc = layers.Activation("sigmoid", name=names["sfeb_gate_sigmoid"])(fcc)
    m = layers.Multiply(name=names["sfeb_mul"])([fc, fcc])
    return layers.Add(name=names["sfeb_out"])([x, m])


def build_keras_hanet(variant: str = "full", input_shape=(256, 256, 3), sfeb_padding: str = "same") -> keras.Model:
    """Build our Keras 3 rebuild of the released HA-Net (weights: random init, never downloaded).

    variant: ``full`` | ``no_tam`` (E goes straight to the decoder) | ``no_tam_no_sfeb`` (and no
    SFEB) | ``baseline`` (and no ConvBlock: DenseNet's 1024-ch ``relu`` feeds the decoder).
    input_shape: (H, W, 3) with H, W multiples of 32; variants with SFEB and
    ``sfeb_padding='valid'`` need H, W >= 64 (SFEB's first conv is 'valid' on the 2x-upsampled
    bottleneck grid).
    sfeb_padding: padding of SFEB's first 3x3 conv (F). The spec writes ``Conv3x3(C)`` without
    'same', but its measured release FLOP count (7.93 G) is reproduced exactly only with
    ``'same'`` (7,932,211,200 MACs vs 7,767,797,760 with 'valid'), so 'same' is the default and
    what the Flax model does; 'valid' is kept to show the difference. Parameter counts and the
    weight file are identical either way; only F's border (hence the pooled P) differs.
    The model maps images in [0, 1] to sigmoid probabilities [B, H, W, 1].
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    h, w, ch = (int(s) for s in input_shape)
    if h % 32 or w % 32:
        raise ValueError(f"input H, W must be multiples of 32, got {(h, w)}")
    use_tam = variant == "full"
    use_sfeb = variant in ("full", "no_tam")
    use_bottleneck = variant != "baseline"
    if sfeb_padding not in ("valid", "same"):
        raise ValueError(f"sfeb_padding must be 'valid' or 'same', got {sfeb_padding!r}")
    if use_sfeb and sfeb_padding == "valid" and (h < 64 or w < 64):
        raise ValueError("variants with SFEB need H, W >= 64 (valid 3x3 conv on the 2x bottleneck grid)")

    inp = keras.Input(shape=(h, w, ch), name="input_image")
    densenet = keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=inp)
    skips = {k: densenet.get_layer(v).output for k, v in SKIP_LAYER_NAMES.items()}
    x = skips["features"]

    bn = BOTTLENECK_LAYER_NAMES
    if use_bottleneck:
        x = layers.Conv2D(256, 3, padding="same", kernel_initializer="he_normal", activation="relu", name=bn["conv"])(x)
        x = layers.BatchNormalization(name=bn["bn"])(x)  # E
    if use_tam:
        e = x
        gh, gw = h // 32, w // 32
        c = e.shape[-1]
        g = GlobalSpatialAttention(in_channel=c, name=bn["gsa"])(e)
        pe_layer = PositionEncoding(in_dim=gh if gh == gw else (gh, gw), out_dim=c // 2, name=bn["pe"])
        sdpa = ScaledDotProductAttention(name=bn["sdpa"])
        pe = pe_layer(e)
        s0 = layers.Add(name=bn["pe_add"])([e, pe])
        s = sdpa(s0)
        x = layers.Add(name=bn["tam_sum"])([g, s])  # T = G + S

    for i, skip_name, filters in DECODER_STAGES:
        names = DECODER_LAYER_NAMES[i]
        x = layers.UpSampling2D(2, interpolation="nearest", name=names["up"])(x)
        if use_sfeb:
            x = _sfeb(x, names, sfeb_padding)
        skip = skips[skip_name]
        x = layers.Concatenate(axis=-1, name=names["concat"])([skip, x])
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", activation="relu", name=names["conv"])(x)
        x = layers.BatchNormalization(name=names["bn"])(x)

    hn = HEAD_LAYER_NAMES
    x = layers.UpSampling2D(2, interpolation="nearest", name=hn["up"])(x)
    x = layers.Conv2D(16, 3, padding="same", kernel_initializer="he_normal", activation="relu", name=hn["conv"])(x)
    x = layers.BatchNormalization(name=hn["bn1"])(x)
    x = layers.BatchNormalization(name=hn["bn2"])(x)
    out = layers.Conv2D(1, 1, activation="sigmoid", name=hn["output"])(x)
    return keras.Model(inp, out, name=f"hanet_{variant}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, non_trainable) parameter counts, as ``model.summary()`` reports them."""
    tr = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    nt = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    return tr, nt


def intermediate_model(model: keras.Model) -> keras.Model:
    """A model on the same layers returning a dict of named intermediate tensors.

    Keys: ``conv1_bn``, ``pool1``, ``pool2_pool``, ``pool3_pool``, ``features`` (DenseNet ``relu``),
    and where the variant has them ``bottleneck`` (E), ``gsa`` (G), ``sdpa`` (S), ``tam`` (T),
    ``sfeb1``..``sfeb4`` (SFEB outputs), plus ``probabilities``.
    """
    names = dict(SKIP_LAYER_NAMES)
    names.update(
        bottleneck=BOTTLENECK_LAYER_NAMES["bn"],
        gsa=BOTTLENECK_LAYER_NAMES["gsa"],
        sdpa=BOTTLENECK_LAYER_NAMES["sdpa"],
        tam=BOTTLENECK_LAYER_NAMES["tam_sum"],
    )
    for i in DECODER_LAYER_NAMES:
        names[f"sfeb{i}"] = DECODER_LAYER_NAMES[i]["sfeb_out"]
    names["probabilities"] = HEAD_LAYER_NAMES["output"]
    present = {layer.name for layer in model.layers}
    outputs = {k: model.get_layer(v).output for k, v in names.items() if v in present}
    return keras.Model(model.input, outputs, name=f"{model.name}_intermediates")


_CONV_GAIN = 1.2  # tuned: sqrt(2) blows activations up through the decoder at 256x256, 1.0 shrinks them
_OUTPUT_GAIN = 2.5


def randomize_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """Set every weight of ``model`` (in place) to seeded random values, for parity tests.

    * Conv kernels: normal, std = gain / sqrt(fan_in), gain 1.2 (2.5 for the 1x1 output conv, so
      the logits have a useful spread); biases normal * 0.1.
    * BatchNorm: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), moving_mean ~ N(0, 0.1),
      moving_variance ~ U(0.5, 1.5) (strictly positive) -- all four differ from their defaults so a
      port that drops, swaps or mis-scales BN statistics cannot match.
    * GSA ``W``: normal, std 1/sqrt(HW); embeddings: U(-0.5, 0.5); anything else: normal * 0.05.

    Scales keep activations finite through DenseNet's 121 BNs and keep the sigmoid output spread
    out (not saturated). Returns ``model``.
    """
    rng = np.random.default_rng(seed)
    done = set()

    def put(var, value):
        var.assign(np.asarray(value, dtype=var.dtype))
        done.add(id(var))

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape
            put(layer.gamma, rng.uniform(0.5, 1.5, c))
            put(layer.beta, rng.normal(0.0, 0.1, c))
            put(layer.moving_mean, rng.normal(0.0, 0.1, c))
            put(layer.moving_variance, rng.uniform(0.5, 1.5, c))
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            fan_in = kh * kw * cin
            gain = _OUTPUT_GAIN if layer.name == HEAD_LAYER_NAMES["output"] else _CONV_GAIN
            put(layer.kernel, rng.normal(0.0, gain / np.sqrt(fan_in), (kh, kw, cin, cout)))
            if layer.use_bias:
                put(layer.bias, rng.normal(0.0, 0.1, (cout,)))
        elif isinstance(layer, layers.Embedding):
            put(layer.embeddings, rng.uniform(-0.5, 0.5, layer.embeddings.shape))
        elif isinstance(layer, GlobalSpatialAttention):
            n = layer.W.shape[0]
            put(layer.W, rng.normal(0.0, 1.0 / np.sqrt(n), (n, n)))
    for var in model.weights:
        if id(var) not in done:
            put(var, rng.normal(0.0, 0.05, var.shape))
    return model


def conv_macs(model: keras.Model, include_sublayers: bool = False) -> int:
    """The release's FLOP count: sum over ``Conv2D`` layers in ``model.layers`` of
    out_h * out_w * out_c * k_h * k_w * in_c (a multiply-accumulate count, bias ignored).

    ``include_sublayers=True`` also counts the three 1x1 convs inside GSA (which the release's
    ``model.layers`` loop does not see).
    """
    total = 0
    for layer in model.layers:
        convs = [layer] if isinstance(layer, layers.Conv2D) else []
        if include_sublayers and isinstance(layer, GlobalSpatialAttention):
            _, h, w, _ = layer.output.shape
            for sub in (layer.proj_query, layer.proj_key, layer.proj_value):
                kh, kw, cin, cout = sub.kernel.shape
                total += h * w * cout * kh * kw * cin
        for conv in convs:
            _, oh, ow, oc = conv.output.shape
            kh, kw, cin, _ = conv.kernel.shape
            total += int(oh) * int(ow) * int(oc) * int(kh) * int(kw) * int(cin)
    return int(total)


def keras_weight_paths(model: keras.Model) -> dict:
    """Map live layer name -> weight-file group (``layers/<snake_class>[_<i>]``), as Keras 3's
    ``saving_lib`` names them (class-name counter in ``model.layers`` order). Useful for porting."""
    from keras.src.utils import naming

    used: dict = {}
    out = {}
    for layer in model.layers:
        base = naming.to_snake_case(layer.__class__.__name__)
        if base in used:
            used[base] += 1
            name = f"{base}_{used[base]}"
        else:
            used[base] = 0
            name = base
        out[layer.name] = f"layers/{name}"
    return out
