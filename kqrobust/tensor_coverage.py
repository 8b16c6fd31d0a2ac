"""QAT quantizes every tensor the full-int8 file quantizes.

LSQ quantizes the inputs of the layers with kernels. A full-integer TFLite
model stores every tensor in int8, so the tensors that no such input covers
(a residual branch before its Add, a ReLU before a global average pool, the
logits) would be trained in float and rounded for the first time in the
int8 file. `coverage_call_function` finds them with the export's own plan
(`kq.export.graph.calibrated_tensors`) and puts a `kq.layers.QuantIdentity`
on each while `kq.quantize_model` clones the model, 8-bit (the int8 file's
width, whatever the recipe's activation bits) with the recipe's activation
quantizer, as tfmot quantizes the outputs of Add and of activations. The
export then takes each learned grid as the tensor's range instead of calibrating one.

Left out: the model input (the first layer's input quantizer covers it
unless a preprocessing layer comes first), a model output on a range TFLite
fixes (a softmax: `kq.export.tensors.FIXED_RANGES`; quantizing the
probabilities would stop the cross-entropy gradient where one rounds to 0),
and the intermediate tensors of the layers the export rewrites
(`kq.export.rewrite`: LayerNormalization's, a GELU's input inside a Dense).
"""

import keras

from kqrobust import model_graph
from kqrobust import quantizers as quantizers_lib
from kqrobust.configs import layer_table
from kqrobust.export import graph as export_graph
from kqrobust.export import tensors
from kqrobust.layers.quant_identity import QuantIdentity

SUFFIX = "_quant"


def _quantized_tensor(name, consumers, folded):
    """The tensor of `model` that holds the calibrated tensor `name`: after
    the BatchNorms the export folds into it."""
    while len(consumers.get(name, [])) == 1 and consumers[name][0] in folded:
        name = consumers[name][0]
    return name


def _on_fixed_range(operation):
    """A layer whose own activation is one TFLite gives a fixed int8 range
    (`Dense(..., activation="softmax")`): the export splits the activation
    out and puts its output on that range."""
    activation = getattr(getattr(operation, "activation", None), "__name__", None)
    return activation in tensors.FIXED_RANGES


def uncovered_tensors(model, input_quantized=None):
    """Names of the operations whose output the int8 file quantizes and no
    quantizer covers, in topological order (see module doc).

    Args:
        model: a Functional model (its top graph level is planned).
        input_quantized: as `kq.export.graph.calibrated_tensors`: the
            layers that will quantize their input, for a float model.
    """
    calibrated, folded = export_graph.calibrated_tensors(model, input_quantized)
    by_name = {op.name: op for op in model_graph.operations(model)}
    consumers = {}
    for name, sources in model_graph.inbound_layers(model).items():
        for source in sources:
            consumers.setdefault(source, []).append(name)
    names = [_quantized_tensor(name, consumers, set(folded)) for name in calibrated]
    return [name for name in names if name in by_name and not _on_fixed_range(by_name[name])]


def _unique_name(base, taken):
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    taken.add(name)
    return name


def _nested_names(model):
    return {
        layer.name
        for op in model_graph.operations(model)
        if isinstance(op, keras.Model)
        for layer in model_graph.flat_layers(op)
    }


def coverage_call_function(model, input_quantized, activation_quantizer):
    """A `call_function` for `keras.models.clone_model(model, ...)` that puts
    a `QuantIdentity` after each of `model`'s `uncovered_tensors`.

    Args:
        model: the Functional float model about to be quantized.
        input_quantized: names of its layers that will quantize their input.
        activation_quantizer: the recipe's activation quantizer (a name,
            dict or instance), made 8-bit and per tensor here; unsigned on
            tensors that are provably >= 0.

    Returns:
        The call function, or None when every tensor is covered.
    """
    nested = _nested_names(model)  # Only the top level is covered: names must be unambiguous.
    names = [n for n in uncovered_tensors(model, input_quantized) if n not in nested]
    if not names:
        return None
    nonnegative, _ = model_graph.nonnegative_outputs(model, layer_table.output_is_nonnegative)
    base = quantizers_lib.get(activation_quantizer)
    taken = {op.name for op in model_graph.operations(model)} | nested
    identities = {
        name: QuantIdentity(
            base.replace(
                bits=8,
                signed=name not in nonnegative,
                narrow_range=False,
                channel_axis=None,
                per_sample=True,
            ),
            name=_unique_name(f"{name}{SUFFIX}", taken),
        )
        for name in names
    }

    def call_operation(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        identity = identities.get(operation.name)
        return outputs if identity is None else identity(outputs)

    return call_operation
