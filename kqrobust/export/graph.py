"""Builds the export graph of a Keras model: BN folded, FakeQuant ops in.

`export_model(model)` clones a Sequential/Functional model (from
`kq.quantize_model`, `kq.ptq.quantize`, `kq.robustify` or plain Keras) into
a float Keras model that the TFLite converter and tf2onnx quantize exactly as
the source model quantizes:

1. every Conv2D / DepthwiseConv2D / Dense (quantized or not) stores
   `Q_w(transform(W))`: the weight transform (SatNL) is folded in, and the
   weights sit on their quantization grid;
2. a BatchNormalization whose only input is such a layer (with a linear
   activation, feeding nothing else) is folded into it and replaced by an
   identity (`FoldedBatchNorm`); the per-channel steps are rescaled by `|gamma/sqrt(var+eps)|`
   so the folded kernel keeps its integer codes (`fold.py`);
3. input quantizers become 8-bit per-tensor FakeQuant ops with their learned
   ranges, and kernel quantizers per-channel 8-bit ranges of scale `s/k`,
   `s` the weight step and `k` an integer (`ranges.py`, `layers.py`): a
   FakeQuant op on Conv2D kernels, written into the `.tflite` after
   conversion for Dense and DepthwiseConv2D (`tflite_weights.py`), so the
   int8 weights are exactly `k` times the quantizer's codes;
4. with representative data (the full-integer graph), every tensor gets a
   FakeQuant (`tensors.py`) and every bias is rounded to its int32 grid
   `s_in * s/k` (`ranges.int32_bias`), as the converter rounds it.

Every other layer is cloned unchanged with its weights. Nested models are
flattened first (`flatten.py`).
"""

import dataclasses

import keras
import numpy as np

from kqrobust import model_graph
from kqrobust.export import flatten
from kqrobust.export import fold
from kqrobust.export import ranges
from kqrobust.export import rewrite
from kqrobust.export import tensors
from kqrobust.export.layers import FakeQuant
from kqrobust.export.layers import FoldedBatchNorm
from kqrobust.export.representative import representative_array
from kqrobust.layers import HOOK_KEYS
from kqrobust.layers import QuantIdentity
from kqrobust.layers import check_initialized
from kqrobust.layers import registry


@dataclasses.dataclass
class LinearPlan:
    """What one linear layer becomes in the export graph."""

    export_class: type
    kernel: np.ndarray
    bias: np.ndarray
    input_range: tuple = None
    kernel_range: tuple = None
    folded_bn: str = None


def _kernel(layer):
    """`Q_w(transform(W))` of a kqrobust layer, `W` of a Keras one."""
    if hasattr(layer, "quantized_kernel"):
        return np.asarray(keras.ops.convert_to_numpy(layer.quantized_kernel()))
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel))


def plan_linear(layer, bn_layer=None, weight_grid=False):
    """The `LinearPlan` of one layer of a registered type.

    Args:
        layer: the layer (a `kq.layers.Quant*` or a plain Keras layer).
        bn_layer: the BatchNormalization folded into it, or None.
        weight_grid: put a kernel that has no exportable grid of its own
            (a float layer, an asymmetric min-max grid) on the grid the
            converter would give it: per output channel, scale
            `max|w_c| / 127` (`ranges.converter_step`), so the export graph
            computes what the int8 model computes.

    Returns:
        A `LinearPlan`.
    """
    layer_type = registry.layer_type_of(layer)
    kernel = _kernel(layer)
    bias = None if getattr(layer, "bias", None) is None else np.asarray(layer.bias)
    scale = None
    if bn_layer is not None:
        scale, shift = fold.batchnorm_scale_shift(bn_layer)
        kernel, bias = fold.fold_batchnorm(
            kernel, bias, scale, shift, channel_axes=registry.kernel_output_axes(layer)
        )
    input_range = kernel_range = None
    kernel_quantizer = getattr(layer, "kernel_quantizer", None)
    if kernel_quantizer is not None:
        transformed = keras.ops.convert_to_numpy(layer.transformed_kernel())
        step = ranges.weight_step(kernel_quantizer, layer.kernel_quantizer_weights, transformed)
        if step is not None:
            step = ranges.tame_free_steps(step, transformed)
            int8_scale = fold.fold_step(step, scale) / ranges.code_multiplier(kernel_quantizer)
            # One scale per output channel, a per-tensor step repeated.
            channels = np.prod(
                registry.channel_shape(kernel.shape, registry.kernel_output_axes(layer)), dtype=int
            )
            kernel_range = ranges.kernel_range(np.broadcast_to(int8_scale, (channels,)))
    if kernel_range is None and weight_grid:
        step = ranges.converter_step(kernel, registry.kernel_output_axes(layer))
        kernel = ranges.on_grid(kernel, step, registry.kernel_output_axes(layer))
        kernel_range = ranges.kernel_range(step)
    if getattr(layer, "input_quantizer", None) is not None:
        input_range = ranges.activation_range(layer.input_quantizer, layer.input_quantizer_weights)
    return LinearPlan(
        layer_type.export_class,
        np.asarray(kernel, np.float32),
        None if bias is None else np.asarray(bias, np.float32),
        input_range,
        kernel_range,
        None if bn_layer is None else bn_layer.name,
    )


def _export_layer(layer, plan):
    config = {k: v for k, v in layer.get_config().items() if k not in HOOK_KEYS}
    export_config = registry.layer_type_of(layer).export_config
    if export_config is not None:  # e.g. EinsumDense: bias_axes, no use_bias
        config = export_config(layer, config, plan.bias is not None)
    else:
        config["use_bias"] = plan.bias is not None
        config["bias_initializer"] = "zeros"
    return plan.export_class.from_config(
        {**config, "input_range": plan.input_range, "kernel_range": plan.kernel_range}
    )


def _clone_function(plans, bn_to_linear):
    """The clone of each source layer: its export layer (registered types), an
    identity for a folded BatchNorm, the layer's own export rule, or a copy."""

    def clone_layer(layer):
        if layer.name in plans:
            return _export_layer(layer, plans[layer.name])
        if layer.name in bn_to_linear:
            return FoldedBatchNorm(name=layer.name)
        if hasattr(layer, "export_layer"):  # Its own export rule (QuantDotProductAttention)
            return layer.export_layer()
        return layer.__class__.from_config(layer.get_config())

    return clone_layer


def _export_input(model, input_shape, batch_size):
    """The export graph's `keras.Input`, like the source model's (shape and
    batch size overridable)."""
    source_input = model.inputs[0]
    shape = tuple(source_input.shape[1:]) if input_shape is None else tuple(input_shape)
    return keras.Input(
        shape=shape, batch_size=batch_size, dtype=source_input.dtype, name=source_input.name
    )


def _call_function(inputs, tensor_ranges, layer_outputs):
    """Calls each cloned layer, with the model input's FakeQuant (made once)
    on reads of `inputs` and a FakeQuant after each output `tensor_ranges`
    names; records every layer's output in `layer_outputs`."""
    quantized_input = []

    def read_input(tensor):
        if tensor is not inputs or tensors.INPUT not in tensor_ranges:
            return tensor
        if not quantized_input:
            quantized_input.append(
                FakeQuant(*tensor_ranges[tensors.INPUT], name="input_fq")(inputs)
            )
        return quantized_input[0]

    def call_layer(layer, *args, **kwargs):
        args = keras.tree.map_structure(read_input, args)
        outputs = layer(*args, **kwargs)
        layer_outputs[layer.name] = outputs  # Nested models: the outer call's output.
        if layer.name in tensor_ranges:
            outputs = FakeQuant(*tensor_ranges[layer.name], name=f"{layer.name}_fq")(outputs)
        return outputs

    return call_layer


def _copy_weights(model, graph, plans, bn_to_linear):
    """Writes the planned kernels and biases, and copies every other layer's
    weights (not a folded BatchNorm's, nor those of a layer with its own
    export rule, which built them)."""
    clone_layers = {layer.name: layer for layer in model_graph.flat_layers(graph)}
    for layer in model_graph.flat_layers(model):
        name = layer.name
        target = clone_layers[name]
        if name in plans:
            plan = plans[name]
            target.kernel.assign(plan.kernel)
            if plan.bias is not None:
                target.bias.assign(plan.bias)
        elif name not in bn_to_linear and layer.weights and not hasattr(layer, "export_layer"):
            target.set_weights(layer.get_weights())
            if hasattr(target, "finalize_state"):  # Normalization: mean from its weights
                target.finalize_state()


def _build(model, plans, bn_to_linear, tensor_ranges, input_shape, batch_size):
    """Clones `model` into the export graph; `tensor_ranges` adds FakeQuants.

    Returns:
        `(graph, layer_outputs)`: the export model, and each layer's output
        tensor in it (before its FakeQuant).
    """
    inputs = _export_input(model, input_shape, batch_size)
    layer_outputs = {}
    structure = model.input if isinstance(model.input, (list, tuple)) else None
    clone = keras.models.clone_model(
        model,
        input_tensors=inputs if structure is None else type(structure)([inputs]),
        clone_function=_clone_function(plans, bn_to_linear),
        call_function=_call_function(inputs, tensor_ranges, layer_outputs),
        recursive=True,
    )
    graph = keras.Model(clone.inputs, clone.outputs, name=f"{model.name}_export")
    _copy_weights(model, graph, plans, bn_to_linear)
    return graph, layer_outputs


def observed_ranges(graph, layer_outputs, names, data, batch_size=64):
    """`{name: (min(lo, 0), max(hi, 0))}` of layer outputs over `data`.

    Like the converter's calibration: the min and max seen, widened to hold
    0. `layer_outputs` maps layer names to their output tensors in `graph`;
    `tensors.INPUT` stands for the model input.
    """
    layer_names = [n for n in names if n != tensors.INPUT]
    probe = (
        keras.Model(graph.inputs, [layer_outputs[n] for n in layer_names]) if layer_names else None
    )
    lows = {n: 0.0 for n in names}
    highs = {n: 0.0 for n in names}
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        values = probe([batch], training=False) if layer_names else []
        values = [values] if len(layer_names) == 1 else list(values)
        if tensors.INPUT in names:
            values.append(batch)
        for name, value in zip(layer_names + [tensors.INPUT] * (tensors.INPUT in names), values):
            value = keras.ops.convert_to_numpy(value)
            lows[name] = min(lows[name], float(value.min()))
            highs[name] = max(highs[name], float(value.max()))
    return {n: (lows[n], max(highs[n], lows[n] + 1e-6)) for n in names}


def export_model(
    model,
    representative_data=None,
    input_shape=None,
    batch_size=None,
    fake_quant=True,
    num_samples=200,
):
    """Returns the export graph of `model` (a float Keras model).

    Args:
        model: a built Sequential or Functional Keras model with one input.
        representative_data: optional input samples (array, `(x, y)`,
            `tf.data` or iterable, as `to_tflite` takes them). With them,
            every tensor gets a FakeQuant (learned ranges where a quantizer
            has one, else the min/max over the first `num_samples` samples)
            and every bias sits on its int32 grid: the graph a full-integer
            TFLite model is converted from. Without them only the
            quantizers' FakeQuants are in (the ONNX QDQ graph).
        input_shape: optional fixed input shape without the batch axis, to
            replace unknown (None) spatial dimensions.
        batch_size: optional fixed batch size of the graph's input.
        fake_quant: False leaves every FakeQuant out: the float graph (BN and
            weight transforms folded, kernels on their grids) that float
            TFLite is converted from.
        num_samples: how many representative samples set the ranges; the
            same default as `to_tflite`, so `export_model(model, data)` is
            the graph `to_tflite(model, data)` converts.

    Returns:
        A `keras.Model` with BN and weight transforms folded, kernels on
        their grids and TF FakeQuant ops for the ranges.

    Example: `export_model(qmodel, x_train[:200]).predict(x)` is what the
    integer model computes, in float; docs/extending.md runs it.
    """
    model_graph.check_graph_model(model, "kq.export")
    check_initialized(model, "export")
    if len(model.inputs) != 1:
        raise ValueError(
            f"kq.export supports models with one input. Received: {len(model.inputs)} "
            f"inputs in model '{model.name}'"
        )
    if flatten.needs_flattening(model):
        model = flatten.flatten_model(model)
    full_integer = representative_data is not None and fake_quant
    if full_integer and rewrite.needs_rewrite(model):
        model = rewrite.rewrite_model(model)  # int8 ops for LayerNorm, split activations, ...
    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    bn_to_linear = fold.foldable_batchnorms(model)
    linear_to_bn = {v: layers[k] for k, v in bn_to_linear.items()}
    plans = {
        name: plan_linear(layer, linear_to_bn.get(name), weight_grid=full_integer)
        for name, layer in layers.items()
        if registry.layer_type_of(layer) is not None
    }
    if not fake_quant:
        plans = {
            n: dataclasses.replace(p, input_range=None, kernel_range=None) for n, p in plans.items()
        }
    if not full_integer:
        tensor_ranges = _identity_ranges(model, layers) if fake_quant else {}
        return _build(model, plans, bn_to_linear, tensor_ranges, input_shape, batch_size)[0]
    shape = tuple(model.inputs[0].shape[1:]) if input_shape is None else tuple(input_shape)
    data = representative_array(representative_data, shape, num_samples)
    input_ranges = {n: p.input_range for n, p in plans.items() if p.input_range is not None}
    learned, calibrate = _plan_tensors(model, layers, input_ranges, bn_to_linear)
    tensor_ranges = dict(learned)
    if calibrate:
        partial, outputs = _build(model, plans, bn_to_linear, learned, input_shape, None)
        tensor_ranges.update(observed_ranges(partial, outputs, calibrate, data))
    plans = _one_range_per_tensor(model, plans, tensor_ranges, set(bn_to_linear))
    plans = _int32_biases(model, plans, tensor_ranges, set(bn_to_linear))
    return _build(model, plans, bn_to_linear, tensor_ranges, input_shape, batch_size)[0]


def int32_bias_shifts(model):
    """How the full-integer file moves each bias: onto its int32 grid.

    The file stores the bias of every quantized linear layer (with a folded
    BatchNorm's shift in it) as int32 on the grid `s_in * s_w / k`
    (`ranges.int32_bias`). Here are those roundings for the layers whose
    grid the model's quantizers fix: a learned input range and a kernel on
    its grid (every quantized layer of a `kq.quantize_model` model, whose
    quantizers cover every int8 tensor). Other layers get their range from
    calibration data at export and are left out.

    Args:
        model: a Sequential or Functional model with kqrobust layers.

    Returns:
        `{layer: (batchnorm, shift)}`: for each such layer with a bias or a
        folded BatchNorm, the BatchNormalization folded into it (or None)
        and the float64 `shift` to add to the folded bias (the layer's own
        bias without a BatchNorm), shaped as that bias.
    """
    model_graph.check_graph_model(model, "kq.round_biases_to_int32")
    if flatten.needs_flattening(model):
        model = flatten.flatten_model(model)
    if rewrite.needs_rewrite(model):
        model = rewrite.rewrite_model(model)  # the export's graph: its tensors and ranges
    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    bn_to_linear = fold.foldable_batchnorms(model)
    linear_to_bn = {v: layers[k] for k, v in bn_to_linear.items()}
    plans = {
        name: plan_linear(layer, linear_to_bn.get(name))
        for name, layer in layers.items()
        if registry.layer_type_of(layer) is not None
    }
    input_ranges = {n: p.input_range for n, p in plans.items() if p.input_range is not None}
    learned, _ = _plan_tensors(model, layers, input_ranges, bn_to_linear)
    plans = _one_range_per_tensor(model, plans, learned, set(bn_to_linear))
    rounded = _int32_biases(model, plans, learned, set(bn_to_linear))
    shifts = {}
    for name, plan in plans.items():
        if plan.bias is None or rounded[name].bias is plan.bias:
            continue
        shift = rounded[name].bias.astype(np.float64) - plan.bias.astype(np.float64)
        # A bias on its grid already is off it by float32 rounding only.
        shift[np.abs(shift) <= 2 * np.spacing(np.abs(plan.bias))] = 0.0
        shifts[layers[name]] = (linear_to_bn.get(name), shift)
    return shifts


def _plan_tensors(model, layers, input_ranges, bn_to_linear):
    """`tensors.plan_tensors` with the export graph's rules: the learned
    input ranges (`input_ranges` and each layer's `export_input_ranges`),
    the folded BatchNorms, and the layers TFLite fuses a ReLU into."""
    input_ranges = {**input_ranges, **_per_input_ranges(model, layers)}
    fusing = {
        n
        for n, l in layers.items()
        if getattr(registry.layer_type_of(l), "fuses_relu", False)
        or isinstance(l, keras.layers.Add)
    }
    return tensors.plan_tensors(model, input_ranges, set(bn_to_linear), fusing)


def calibrated_tensors(model, input_quantized=None):
    """The tensors whose int8 range `export_model` would calibrate from data.

    They are the tensors of the full-integer export graph that no quantizer
    of `model` covers: each one is rounded to 8 bits for the first time in
    the int8 file. Quantizers count whether or not they saw data yet (only
    their presence matters here). The tensors that the export's rewrites
    create (`rewrite.py`) are not among them: they are not tensors of
    `model`.

    Args:
        model: a Functional model (one graph level is planned; a nested
            model is one operation).
        input_quantized: names of the layers of registered types that
            quantize their input, for a float model about to be quantized
            (`kq.quantize_model`); None reads them off `model`.

    Returns:
        `(names, folded)`: the tensor names in topological order (a layer or
        operation name, or `tensors.INPUT` for the model input), and
        `{BatchNorm name: linear layer name}` of the BatchNorms the export
        folds (a calibrated linear layer's tensor is its BatchNorm's output
        in `model`).
    """
    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    if input_quantized is None:
        input_quantized = {
            name
            for name, layer in layers.items()
            if registry.layer_type_of(layer) is not None
            and getattr(layer, "input_quantizer", None) is not None
        }
    input_ranges = {name: (0.0, 1.0) for name in input_quantized}  # Any range: only presence counts
    bn_to_linear = fold.foldable_batchnorms(model)
    return _plan_tensors(model, layers, input_ranges, bn_to_linear)[1], bn_to_linear


def _identity_ranges(model, layers):
    """`{tensor: (min, max)}` of the tensors `QuantIdentity` layers quantize:
    in the export graph each is an identity, and the FakeQuant goes on the
    tensor it reads."""
    feeds = model_graph.inbound_layers(model)
    return {
        feeds[name][0]: layer.export_input_ranges()[0]
        for name, layer in layers.items()
        if isinstance(layer, QuantIdentity)
    }


def _per_input_ranges(model, layers):
    """`{layer: {input tensor: (min, max)}}` of the layers that give each
    input its own learned range (`export_input_ranges()`, e.g.
    `QuantDotProductAttention`'s query, key and value); the tensor's
    FakeQuant takes it."""
    feeds = model_graph.inbound_layers(model)
    found = {}
    for name, layer in layers.items():
        if hasattr(layer, "export_input_ranges"):
            pairs = zip(feeds.get(name, []), layer.export_input_ranges())
            found[name] = {source: r for source, r in pairs if r is not None}
    return found


def _one_range_per_tensor(model, plans, tensor_ranges, folded_batchnorms):
    """The plans without an input FakeQuant where the input tensor has another range.

    An int8 tensor has one scale. A layer whose input tensor carries a range
    other than its own learned input range computes on the tensor as it is,
    and the converter drops the layer's own input FakeQuant: the tensor is
    read by several quantized layers (self-attention's query, key and value
    projections, a residual block's shortcut and main convolutions; the
    first reader's range is the tensor's, `tensors.plan_tensors`), or it is
    a sigmoid, softmax or tanh output on TFLite's fixed scale
    (`tensors.FIXED_RANGES`). The export graph does the same, so it rounds
    the tensor once, as LiteRT does.
    """
    read = tensors.read_ranges(model, list(plans), tensor_ranges, folded_batchnorms)

    def differs(name, plan):
        source = read.get(name)
        return (
            plan.input_range is not None
            and source is not None
            and not np.allclose(source, plan.input_range, rtol=0, atol=0)
        )

    return {
        name: dataclasses.replace(plan, input_range=None) if differs(name, plan) else plan
        for name, plan in plans.items()
    }


def _int32_biases(model, plans, tensor_ranges, folded_batchnorms):
    """The plans with each bias rounded to its int32 grid (`ranges.int32_bias`).

    Needs the layer's input range (its own input quantizer's, else the range
    of the tensor it reads) and its kernel range; other layers keep their
    bias.
    """
    read = tensors.read_ranges(model, list(plans), tensor_ranges, folded_batchnorms)
    rounded = {}
    for name, plan in plans.items():
        input_range = plan.input_range or read.get(name)
        if plan.bias is not None and plan.kernel_range is not None and input_range is not None:
            plan = dataclasses.replace(
                plan, bias=ranges.int32_bias(plan.bias, input_range, plan.kernel_range)
            )
        rounded[name] = plan
    return rounded
