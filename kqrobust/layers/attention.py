"""MultiHeadAttention as EinsumDense projections plus a quantized dot-product attention.

TFLite's int8 BATCH_MATMUL multiplies two int8 activations, so both matmuls of
attention need quantized inputs: `Q K^T` needs Q and K, `softmax(.) V` the
softmax output and V. `keras.layers.MultiHeadAttention` computes them inside
one layer, so a rewrite rule (`kq.layers.rewrites`) replaces each call of it,
before `kq.quantize_model` plans the layers, by the equivalent subgraph

    q = EinsumDense(f"{mha}_query")(query)      # (B, T, N, key_dim)
    k = EinsumDense(f"{mha}_key")(key)          # (B, S, N, key_dim)
    v = EinsumDense(f"{mha}_value")(value)      # (B, S, N, value_dim)
    o = QuantDotProductAttention(f"{mha}_attention")([q, k, v])
    out = EinsumDense(f"{mha}_attention_output")(o)

with the equations, bias axes and weights of the MHA's public `query_dense`,
`key_dense`, `value_dense` and `output_dense` sublayers. The four projections
are then quantized as any EinsumDense; `QuantDotProductAttention` computes
`softmax(Q K^T / sqrt(key_dim)) V` with a quantizer on Q, K, V, on the scores
and on the softmax output (on TFLite's fixed SOFTMAX grid, step 1/256). Its
export class puts 8-bit FakeQuant ops with the same ranges on the same
tensors; the projections' output FakeQuants take the learned query, key and
value ranges (`export_input_ranges`).

Supported: 3-D inputs `(batch, steps, features)` with the default attention
axes, self- and cross-attention (`query`, `value`, optional `key`),
`use_causal_mask=True`, `dropout=0`, `use_gate=False`, no `sliding_window`,
no `attention_mask` / Keras masks, no `return_attention_scores`. Any other
MHA stays float with a warning naming the option (`strict=True` raises).

References:
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017, eq. 1
    (scaled dot-product attention).
    TensorFlow Lite 8-bit quantization specification (int8 BATCH_MATMUL,
    SOFTMAX output scale 1/256).
"""

import inspect
import math
import warnings

import keras
from keras import ops

from kqrobust import quantizers as quantizers_lib
from kqrobust.api_export import kqrobust_export
from kqrobust.layers import rewrites
from kqrobust.untracked import Untracked

# MultiHeadAttention's einsum equations for 3-D inputs and the default
# attention axes (Keras builds them with `_build_attention_equation(4, (1,))`).
DOT_PRODUCT_EQUATION = "aecd,abcd->acbe"  # key (B,S,N,H), query (B,T,N,H) -> (B,N,T,S)
COMBINE_EQUATION = "acbe,aecd->abcd"  # probs (B,N,T,S), value (B,S,N,H) -> (B,T,N,H)
QUANTIZED = ("query", "key", "value", "scores", "probs")
SOFTMAX_STEP = 1.0 / 256.0  # TFLite int8 SOFTMAX output: scale 1/256, zero point -128
SOFTMAX_RANGE = (0.0, 255.0 * SOFTMAX_STEP)
_MASKED = -1e9  # Added to masked scores before the softmax (as Keras' Softmax does).


def _causal_mask(t, s):
    """`(1, 1, T, S)` booleans, True where query `i` may see key `j <= i`."""
    rows = ops.expand_dims(ops.arange(t), 1)
    cols = ops.expand_dims(ops.arange(s), 0)
    return ops.reshape(ops.greater_equal(rows, cols), (1, 1, t, s))


@kqrobust_export
class QuantDotProductAttention(keras.layers.Layer):
    """`softmax(Q K^T / sqrt(key_dim)) V` on projected multi-head tensors.

    Called on `[query, key, value]` of shapes `(B, T, N, key_dim)`,
    `(B, S, N, key_dim)`, `(B, S, N, value_dim)`; returns `(B, T, N,
    value_dim)`, as the inside of `keras.layers.MultiHeadAttention`. The
    query is scaled by `1/sqrt(key_dim)` first, then the quantizers act on
    the scaled query, the key, the value, the scores `Q K^T` and the softmax
    output, so both matmuls read quantized tensors (TFLite's int8
    BATCH_MATMUL). Without quantizers the layer is MHA's float attention.

    Args:
        key_dim: the size of each attention head for query and key.
        use_causal_mask: mask keys after each query position (decoder
            self-attention).
        activation_quantizer: quantizer of Q, K and V (signed, per tensor):
            a name, dict or instance, or None for float attention. The
            scores get an 8-bit copy of it (TFLite keeps them in int8 either
            way); the softmax output an unsigned 8-bit `FixedRange` of step
            1/256, TFLite's fixed int8 SOFTMAX output grid, so QAT rounds
            it as LiteRT does.

    Example:
        >>> attention = kq.layers.QuantDotProductAttention(
        ...     key_dim=16, activation_quantizer=kq.quantizers.LSQ(bits=8, per_sample=True))

    References:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017, eq. 1.
        Esser et al., "Learned Step Size Quantization", ICLR 2020.
    """

    def __init__(self, key_dim, use_causal_mask=False, activation_quantizer=None, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = int(key_dim)
        self.use_causal_mask = bool(use_causal_mask)
        self.activation_quantizer = (
            None if activation_quantizer is None else quantizers_lib.get(activation_quantizer)
        )
        self._holder = Untracked({})  # the quantizers' variables by tensor

    def tensor_quantizers(self):
        """`{tensor: quantizer}` of the quantized tensors (empty when float)."""
        base = self.activation_quantizer
        if base is None:
            return {}
        return {
            "query": base,
            "key": base,
            "value": base,
            "scores": base.replace(bits=8, signed=True),
            "probs": quantizers_lib.FixedRange(
                bits=8,
                signed=False,
                narrow_range=False,
                per_sample=getattr(base, "per_sample", False),
            ),
        }

    def build(self, input_shapes):
        query_shape, key_shape, _ = input_shapes
        shapes = {
            "query": query_shape,
            "key": key_shape,
            "value": input_shapes[2],
            "scores": (query_shape[0], query_shape[2], query_shape[1], key_shape[1]),
        }
        shapes["probs"] = shapes["scores"]
        for name, quantizer in self.tensor_quantizers().items():
            self._holder.value[name] = quantizer.build(tuple(shapes[name]), name, self)
        if "probs" in self._holder.value:  # TFLite's SOFTMAX grid, set and never learned
            quantizer, weights = self.tensor_quantizers()["probs"], self._holder.value["probs"]
            quantizer.set_step(weights, ops.ones_like(quantizer.step(weights)) * SOFTMAX_STEP)

    def quantizer_weights(self, tensor):
        """The variables of one tensor's quantizer by role (e.g. "step")."""
        return self._holder.value[tensor]

    def uninitialized_quantizers(self):
        """The tensors whose quantizer never saw data."""
        return [
            name
            for name, quantizer in self.tensor_quantizers().items()
            if not quantizer.is_initialized(self._holder.value[name])
        ]

    def calibration_weights(self):
        """The variables a calibration forward sets: those of the quantizers
        that never saw data (`kq.training.initialize_activation_steps`)."""
        return [
            v for name in self.uninitialized_quantizers() for v in self._holder.value[name].values()
        ]

    def _quantize(self, name, x, training):
        quantizer = self.tensor_quantizers().get(name)
        if quantizer is None:
            return x
        return quantizer(x, self._holder.value[name], training=training)

    def call(self, inputs, training=None):
        training = bool(training)
        query, key, value = inputs
        query = ops.multiply(query, ops.cast(1.0 / math.sqrt(self.key_dim), query.dtype))
        query = self._quantize("query", query, training)
        key = self._quantize("key", key, training)
        value = self._quantize("value", value, training)
        scores = self._quantize("scores", ops.einsum(DOT_PRODUCT_EQUATION, key, query), training)
        if self.use_causal_mask:
            mask = _causal_mask(ops.shape(query)[1], ops.shape(key)[1])
            scores = ops.where(mask, scores, ops.cast(_MASKED, scores.dtype))
        probs = self._quantize("probs", ops.softmax(scores, axis=-1), training)
        return ops.einsum(COMBINE_EQUATION, probs, value)

    def compute_output_shape(self, input_shapes):
        query_shape, _, value_shape = input_shapes
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def export_ranges(self):
        """`{tensor: (min, max)}` of the 8-bit export FakeQuants (learned ranges).

        The key and the value are left out: they are the outputs of their
        projections, whose FakeQuant has these ranges (`export_input_ranges`;
        a second FakeQuant right after it would convert to a float
        DEQUANTIZE/QUANTIZE pair, not an int8 requantize). The query has one
        after its `1/sqrt(key_dim)` scaling (an int8 MUL).
        The softmax output's is TFLite's fixed int8 SOFTMAX output range
        `[0, 255/256]`, so no requantization follows the SOFTMAX.
        """
        from kqrobust.export import ranges

        found = {
            name: ranges.activation_range(quantizer, self._holder.value[name])
            for name, quantizer in self.tensor_quantizers().items()
            if name not in ("key", "value")
        }
        if "probs" in found:  # TFLite's int8 SOFTMAX output: scale 1/256, zero point -128
            found["probs"] = SOFTMAX_RANGE
        return found

    def export_input_ranges(self):
        """The 8-bit ranges of the `[query, key, value]` inputs in the export
        graph, which the projections' output FakeQuants take
        (`kq.export.tensors.plan_tensors`): the learned key and value
        ranges, and the learned range of the scaled query times
        `sqrt(key_dim)`, so that the int8 MUL by `1/sqrt(key_dim)` lands
        the query on its learned grid and every input is rounded once, on
        the grid QAT rounds it to. None for float attention."""
        from kqrobust.export import ranges

        found = {
            name: ranges.activation_range(quantizer, self._holder.value[name])
            for name, quantizer in self.tensor_quantizers().items()
        }
        if not found:
            return [None, None, None]
        query = found["query"]
        if query is not None:
            query = tuple(v * math.sqrt(self.key_dim) for v in query)
        return [query, found["key"], found["value"]]

    def export_layer(self):
        """The export-graph layer: the same attention with 8-bit FakeQuants
        of the learned ranges (`kq.export.export_model` calls it)."""
        return ExportDotProductAttention(
            key_dim=self.key_dim,
            use_causal_mask=self.use_causal_mask,
            tensor_ranges=self.export_ranges(),
            name=self.name,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_dim": self.key_dim,
                "use_causal_mask": self.use_causal_mask,
                "activation_quantizer": (
                    None
                    if self.activation_quantizer is None
                    else keras.saving.serialize_keras_object(self.activation_quantizer)
                ),
            }
        )
        return config


@kqrobust_export
class ExportDotProductAttention(keras.layers.Layer):
    """`QuantDotProductAttention` with TF's 8-bit FakeQuant ops: what the
    TFLite converter turns into int8 BATCH_MATMUL and SOFTMAX.

    Args:
        key_dim: as `QuantDotProductAttention`.
        use_causal_mask: as `QuantDotProductAttention`; masked scores are set
            to the scores' range minimum (int8 SELECT_V2).
        tensor_ranges: `{tensor: (min, max)}` for "query", "key", "value",
            "scores", "probs"; a missing tensor gets no FakeQuant.
    """

    def __init__(self, key_dim, use_causal_mask=False, tensor_ranges=None, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = int(key_dim)
        self.use_causal_mask = bool(use_causal_mask)
        self.tensor_ranges = {
            k: [float(v[0]), float(v[1])] for k, v in (tensor_ranges or {}).items() if v is not None
        }

    def _fake_quant(self, name, x):
        import tensorflow as tf

        if name not in self.tensor_ranges:
            return x
        lo, hi = self.tensor_ranges[name]
        return tf.quantization.fake_quant_with_min_max_args(
            x, min=lo, max=hi, num_bits=8, narrow_range=False
        )

    def call(self, inputs, training=None):
        import tensorflow as tf

        del training  # The export graph is an inference graph.
        query, key, value = inputs
        heads_first = [0, 2, 1, 3]  # (B, T, N, H) -> (B, N, T, H): TRANSPOSE keeps the scale
        query = self._fake_quant("query", query * (1.0 / math.sqrt(self.key_dim)))
        query = tf.transpose(query, heads_first)
        key = tf.transpose(self._fake_quant("key", key), heads_first)
        value = tf.transpose(self._fake_quant("value", value), heads_first)
        # Explicit BATCH_MATMULs: the converter's einsum lowering adds transposes
        # whose scales conflict with the FakeQuant ranges.
        scores = self._fake_quant("scores", tf.linalg.matmul(query, key, transpose_b=True))
        if self.use_causal_mask:
            lowest = self.tensor_ranges.get("scores", (_MASKED, 0.0))[0]
            mask = _causal_mask(tf.shape(query)[2], tf.shape(key)[2])
            scores = tf.where(mask, scores, tf.constant(lowest, scores.dtype))
        probs = self._fake_quant("probs", tf.nn.softmax(scores, axis=-1))
        return tf.transpose(tf.linalg.matmul(probs, value), heads_first)

    def compute_output_shape(self, input_shapes):
        query_shape, _, value_shape = input_shapes
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_dim": self.key_dim,
                "use_causal_mask": self.use_causal_mask,
                "tensor_ranges": self.tensor_ranges,
            }
        )
        return config


# --- The MultiHeadAttention rewrite rule -------------------------------------

_PROJECTIONS = ("query", "key", "value", "attention_output")


def _sublayers(mha):
    return (mha.query_dense, mha.key_dense, mha.value_dense, mha.output_dense)


def expand_attention(mha):
    """The four EinsumDense projections of a built MultiHeadAttention
    (`kq.layers.rewrites` rule), and the copy of its weights into them."""
    new = [
        keras.layers.EinsumDense.from_config({**dense.get_config(), "name": f"{mha.name}_{p}"})
        for dense, p in zip(_sublayers(mha), _PROJECTIONS)
    ]

    def copy_weights(layers):
        for source, target in zip(_sublayers(mha), layers):
            target.set_weights(source.get_weights())

    return new, copy_weights


def unsupported_options(mha, call):
    """The options of one MHA call the rewrite does not reproduce, as text."""
    config = mha.get_config()
    found = []
    if mha.dropout:
        found.append(f"dropout={mha.dropout}")
    if config.get("use_gate"):
        found.append("use_gate=True")
    if config.get("sliding_window") is not None:
        found.append(f"sliding_window={config['sliding_window']}")
    for name in ("attention_mask", "query_mask", "value_mask", "key_mask"):
        if call.get(name) is not None:
            found.append(f"{name}=<tensor>")
    if call.get("return_attention_scores"):
        found.append("return_attention_scores=True")
    ranks = {
        name: len(call[name].shape)
        for name in ("query", "value", "key")
        if call.get(name) is not None
    }
    if any(rank != 3 for rank in ranks.values()):
        found.append(f"inputs of rank {sorted(set(ranks.values()))} (only 3-D inputs)")
    elif mha.attention_axes not in (None, (1,), [1], (-2,), [-2]):
        found.append(f"attention_axes={mha.attention_axes}")
    for name in ("query", "value", "key"):
        if call.get(name) is not None and getattr(call[name], "_keras_mask", None) is not None:
            found.append(f"a Keras mask on '{name}'")
    return found


def _activation_quantizer(recipe):
    """The recipe's activation quantizer at its activation bits, or None."""
    if recipe is None or not recipe.fake_quant or recipe.activation_quantizer is None:
        return None
    return quantizers_lib.get(recipe.activation_quantizer).replace(
        bits=recipe.activation_bits,
        signed=True,
        narrow_range=False,
        channel_axis=None,
        per_sample=True,
    )


def _pin_sequence_lengths(layers, query, key, value):
    """Replaces the unbuilt projections (in place) by copies whose `output_shape`
    holds the static sequence length of the tensor each reads.

    Keras' EinsumDense gives a `None` entry of `output_shape` a `None` static
    dimension; MultiHeadAttention hides it by returning the query's shape,
    but the rewritten graph would pass it on (a `Flatten` after the attention
    would then have no size).
    """
    for index, tensor in enumerate((query, key, value, query)):
        config = layers[index].get_config()
        length = tensor.shape[1]
        if isinstance(length, int) and config["output_shape"][0] is None:
            config["output_shape"] = [length, *config["output_shape"][1:]]
            layers[index] = keras.layers.EinsumDense.from_config(config)


def connect_attention(mha, layers, args, kwargs, context):
    """One MHA call as `projections -> QuantDotProductAttention -> output`
    (`kq.layers.rewrites` rule), or None to keep it (warned, or raised when
    `context["strict"]`)."""
    call = inspect.signature(mha.call).bind(*args, **kwargs).arguments
    found = unsupported_options(mha, call)
    if found:
        message = (
            f"MultiHeadAttention '{mha.name}' stays float: kqrobust quantizes it as "
            f"EinsumDense projections and a quantized attention, which does not support "
            f"{', '.join(found)}. Fix: drop the option, or pass strict=False to keep the "
            "layer float."
        )
        if context.get("strict"):
            raise ValueError(message)
        warnings.warn(message, stacklevel=4)
        return None
    causal = bool(call.get("use_causal_mask"))
    name = f"{mha.name}_attention" + ("_causal" if causal and len(layers) > 4 else "")
    attention = next((l for l in layers[4:] if l.use_causal_mask == causal), None)
    if attention is None:
        attention = QuantDotProductAttention(
            key_dim=mha.key_dim,
            use_causal_mask=causal,
            activation_quantizer=_activation_quantizer(context.get("recipe")),
            name=name,
        )
        layers.append(attention)
    query, value = call["query"], call["value"]
    key = call.get("key")
    if not layers[0].built:
        _pin_sequence_lengths(layers, query, value if key is None else key, value)
    query_dense, key_dense, value_dense, output_dense = layers[:4]
    projected = [query_dense(query), key_dense(value if key is None else key), value_dense(value)]
    return output_dense(attention(projected))


def expand_model(model, strict=False, recipe=None):
    """`model` with every MultiHeadAttention call (and every other rewrite rule)
    expanded, as `kq.quantize_model` does before planning; float, with the same
    weights.

    Example: `expand_model(vit).predict(x)` matches `vit.predict(x)` to 1e-5
    (tests/layers/test_attention.py).
    """
    return rewrites.expand_rewrites(model, context={"recipe": recipe, "strict": strict})[0]


rewrites.register_rewrite(
    keras.layers.MultiHeadAttention, expand_attention, connect=connect_attention
)
