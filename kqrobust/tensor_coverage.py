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
export then takes each learned grid as the tensor's range instead of
calibrating one.

The activations and affine layers TFLite runs as int8 ops of their own are
made layers and operations of the QAT graph first (`expose_int8_operations`:
a GELU or sigmoid inside a Dense or Conv becomes a separate `Activation`,
swish `x * sigmoid(x)`, Normalization and Rescaling `x * scale + offset`),
and each sigmoid, tanh or softmax inside the network gets a `QuantIdentity`
on the grid TFLite fixes for it (step 1/256 or 1/128, never learned), as
LiteRT rounds a squeeze-excite gate.

A tensor has one int8 scale, however many layers read it. Where several
operations read a tensor that a quantized layer reads, directly or through
pooling and reshapes (a residual block's output feeds the next block's first
convolution and its Add, self-attention's normed tokens feed three
projections, an Inception block's input feeds convolutions and a pooled
branch), or a quantized layer reads a tensor on a fixed grid, the readers'
own input quantizers go (`shared_tensors`): one
`QuantIdentity` quantizes the tensor, with the quantizer the first such
reader would have had, and every reader reads its output, as every reader in
the int8 file reads the one int8 tensor. A reader with stochastic feature
perturbation (SFP needs its layer's own input step) keeps its quantizer.

Left out: the model input (the first layer's input quantizer covers it
unless a preprocessing layer comes first), a probability output (a softmax
on TFLite's fixed range: quantizing it in training would stop the
cross-entropy gradient where a probability rounds to 0), the intermediate
tensors of LayerNormalization (the export rewrites it with its weights as
constants), and nested models' tensors (their top-level graph only).
"""

import copy

import keras

from kqrobust import model_graph
from kqrobust import quantizers as quantizers_lib
from kqrobust.configs import layer_table
from kqrobust.export import flatten
from kqrobust.export import graph as export_graph
from kqrobust.export import rewrite
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
    consumers = model_graph.consumers(model)
    names = [_quantized_tensor(name, consumers, set(folded)) for name in calibrated]
    return [name for name in names if name in by_name and not _on_fixed_range(by_name[name])]


def expose_int8_operations(model):
    """`model` as a Functional model in which the operations TFLite computes
    as int8 ops of their own are layers and operations of the graph
    (`kq.export.rewrite.QAT_REWRITES`): a `Dense(..., activation="gelu")`
    becomes the Dense and an `Activation`, swish `x * sigmoid(x)`, and
    `Normalization` and `Rescaling` `x * scale + offset` with the constants
    the int8 file stores (an identity vanishes, as in the file), so their
    tensors can be covered. Every trainable weight stays a variable of the
    same layer. A model holding nested models is returned as it is."""
    if isinstance(model, keras.Sequential):  # clone_model's call_function: Functional only
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if flatten.needs_flattening(model) or not rewrite.needs_rewrite(model, qat_only=True):
        return model
    return rewrite.rewrite_model(model, qat_only=True)


def fixed_range_tensors(model):
    """Names of the operations whose output TFLite puts on a fixed int8 grid
    (sigmoid, tanh, softmax: `kq.export.tensors.FIXED_RANGES`), but for the
    model outputs (a probability output rounded to 1/256 would stop the
    cross-entropy gradient where it rounds to 0)."""
    outputs = set(model_graph.output_layer_names(model))
    return [
        op.name
        for op in model_graph.operations(model)
        if op.name not in outputs and tensors.fixed_range(op) is not None
    ]


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


def _quantizes_input(plan):
    return plan is not None and plan.input_quantizer is not None


def _quantizing_readers(name, consumers, plans, by_name, through):
    """The layers that quantize tensor `name` as their input, in topological
    order: its readers, and through layers that keep its int8 scale (pooling,
    reshapes: `kq.export.tensors.keeps_scale`) theirs. The names of
    those scale-keeping layers are added to the set `through`."""
    found = []
    for reader in consumers.get(name, []):
        if _quantizes_input(plans.get(reader)):
            found.append(reader)
        elif reader in by_name and tensors.keeps_scale(
            by_name[reader], [by_name[r] for r in consumers.get(reader, [])]
        ):
            through.add(reader)
            found += _quantizing_readers(reader, consumers, plans, by_name, through)
    return found


def shared_tensors(model, plans):
    """The tensors whose quantized readers give up their own input quantizer.

    A tensor of `model`'s top level qualifies when a layer that `plans`
    quantizes reads it (directly, or through pooling or reshapes, which keep
    its int8 scale) and either another operation reads it too, or it lies on
    a fixed grid (`fixed_range_tensors`), unless one of those layers perturbs
    its input (SFP) or the tensor is a model output (which keeps its own
    quantization, or none).

    Args:
        model: the Functional float model about to be quantized.
        plans: `{layer name: QuantizeConfig or None}` of its layers.

    Returns:
        `{tensor name: readers}`: the names of the quantizing layers that
        read it, in topological order; the first one's input quantizer
        becomes the tensor's.
    """
    nested = _nested_names(model)
    fixed = set(fixed_range_tensors(model))
    by_name = {op.name: op for op in model_graph.operations(model)}
    inputs = {  # The model input is no operation's output: its first reader quantizes it.
        name for name, op in by_name.items() if isinstance(op, keras.layers.InputLayer)
    }
    excluded = nested | inputs | set(model_graph.output_layer_names(model))
    consumers = model_graph.consumers(model)
    shared, through = {}, set()
    for tensor, names in consumers.items():
        if tensor in excluded or (len(names) < 2 and tensor not in fixed):
            continue
        chain = set()
        quantizing = _quantizing_readers(tensor, consumers, plans, by_name, chain)
        if quantizing and all(plans[n].input_perturbation is None for n in quantizing):
            shared[tensor] = quantizing
            through |= chain
    # A pooled or reshaped shared tensor keeps its scale: its quantizer is the source tensor's.
    return {tensor: readers for tensor, readers in shared.items() if tensor not in through}


def cover_tensors(model, plans, activation_quantizer):
    """The layer plans and the `clone_model` call function that cover every
    tensor the int8 file quantizes (see module doc).

    Args:
        model: the Functional float model about to be quantized.
        plans: `{layer name: QuantizeConfig or None}` of its layers.
        activation_quantizer: the recipe's activation quantizer (a name,
            dict or instance), made 8-bit and per tensor for the tensors no
            layer input covers; unsigned on tensors that are provably >= 0.

    Returns:
        `(plans, call_function)`: the plans without the input quantizers
        that `shared_tensors` moves onto their tensor, and the call function
        (None when nothing is added).
    """
    shared = shared_tensors(model, plans)
    input_quantized = {n for n, plan in plans.items() if _quantizes_input(plan)}
    fixed = set(fixed_range_tensors(model))  # Their QuantIdentity is on TFLite's fixed grid.
    moved = {
        tensor: plans[readers[0]].input_quantizer
        for tensor, readers in shared.items()
        if tensor not in fixed
    }
    stripped = {reader for readers in shared.values() for reader in readers}
    plans = {
        name: _without_input_quantizer(plan) if name in stripped else plan
        for name, plan in plans.items()
    }
    return plans, coverage_call_function(model, input_quantized, activation_quantizer, moved)


def _without_input_quantizer(plan):
    plan = copy.copy(plan)
    plan.input_quantizer = None
    return plan


def coverage_call_function(model, input_quantized, activation_quantizer, moved):
    """A `call_function` for `keras.models.clone_model(model, ...)` that puts
    a `QuantIdentity` after each of `model`'s `uncovered_tensors`, on each
    fixed-grid tensor and on each tensor of `moved`.

    Args:
        model: the Functional float model about to be quantized.
        input_quantized: names of its layers that quantize their input
            (before `moved` takes the input quantizers off some of them).
        activation_quantizer: the recipe's activation quantizer (a name,
            dict or instance), made 8-bit and per tensor here; unsigned on
            tensors that are provably >= 0.
        moved: `{tensor name: quantizer}`: the tensors whose readers' input
            quantizer moves onto them (`shared_tensors`).

    Returns:
        The call function, or None when every tensor is covered.
    """
    nested = _nested_names(model)  # Only the top level is covered: names must be unambiguous.
    learned = [n for n in uncovered_tensors(model, input_quantized) if n not in nested]
    fixed = [n for n in fixed_range_tensors(model) if n not in nested]
    if not learned and not fixed and not moved:
        return None
    nonnegative, _ = model_graph.nonnegative_outputs(model, layer_table.output_is_nonnegative)
    base = quantizers_lib.get(activation_quantizer)
    by_name = {op.name: op for op in model_graph.operations(model)}
    taken = set(by_name) | nested

    def identity(name, quantizer, layer_input=False):
        return QuantIdentity(
            quantizer, layer_input=layer_input, name=_unique_name(f"{name}{SUFFIX}", taken)
        )

    identities = {
        name: identity(
            name,
            base.replace(
                bits=8,
                signed=name not in nonnegative,
                narrow_range=False,
                channel_axis=None,
                per_sample=True,
            ),
        )
        for name in learned
    }
    identities.update(
        {name: identity(name, quantizer, layer_input=True) for name, quantizer in moved.items()}
    )
    # TFLite's grid, set when built and never learned: step (max - min) / 255 from 0 or -1.
    steps = {}
    for name in fixed:
        low, high = tensors.fixed_range(by_name[name])
        identities[name] = identity(
            name,
            quantizers_lib.FixedRange(bits=8, signed=low < 0, narrow_range=False, per_sample=True),
        )
        steps[name] = (high - low) / 255.0

    def call_operation(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        layer = identities.get(operation.name)
        if layer is None:
            return outputs
        outputs = layer(outputs)
        if operation.name in steps:
            layer.input_quantizer.set_step(layer.input_quantizer_weights, steps[operation.name])
        return outputs

    return call_operation
