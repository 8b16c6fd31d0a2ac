"""What every quantized layer shares: quantizers, the SatNL and SFP hooks.

A quantized layer computes `op(perturb(Q_in(x)), Q_w(transform(W))) + b`:
  - `Q_in`: the input-activation quantizer (LSQ convention: a layer
    quantizes its *input*, so FPQ can read the input step);
  - `perturb`: the input perturbation hook (FPQ's SFP), training only;
  - `transform`: the weight transform hook (SatNL's `alpha*tanh(W/alpha)`);
  - `Q_w`: the weight quantizer.
Any of them may be None: with both quantizers None the layer is a float layer
with the robust-training hooks (what `kq.robustify` builds).
"""

import contextlib

import keras
from keras import ops

from kqrobust import model_graph
from kqrobust import quantizers as quantizers_lib
from kqrobust.layers import registry
from kqrobust.untracked import Untracked

# The constructor arguments a quantized layer adds to its Keras class's.
HOOK_KEYS = (
    "kernel_quantizer",
    "input_quantizer",
    "weight_transform",
    "input_perturbation",
    "kernel_losses",
)


def _eager_scope():
    """TF's `init_scope` (leave any function being traced), else a no-op."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


def _maybe(getter, identifier):
    return None if identifier is None else getter(identifier)


def _serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


class QuantizeMixin:
    """Mixed into a subclass of each registered Keras layer type.

    The layer's computation without bias and activation is its registered
    `linear_op`, and its kernel's output-channel axes are the registered
    `channel_axes` (`kq.layers.registry`).

    Args:
        kernel_quantizer: quantizer of the kernel (one step per output
            channel), a name, dict or instance, or None for float weights.
        input_quantizer: quantizer of the layer input, or None.
        weight_transform: callable applied to the kernel before quantization
            (SatNL), or None.
        input_perturbation: callable `(x, input_step) -> x` applied to the
            quantized input in training (SFP), or None.
        kernel_losses: callables of the transformed kernel whose values are
            added to the model losses in training (SymReg, KURE).
        **kwargs: the arguments of the Keras layer class.
    """

    def __init__(
        self,
        *args,
        kernel_quantizer=None,
        input_quantizer=None,
        weight_transform=None,
        input_perturbation=None,
        kernel_losses=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._init_quantization(
            kernel_quantizer, input_quantizer, weight_transform, input_perturbation, kernel_losses
        )

    @property
    def kernel_channel_axis(self):
        """The kernel axes that get one weight step each (output channels)."""
        return registry.kernel_channel_axes(self)

    def linear_op(self, x, kernel):
        """The layer's computation without bias and activation."""
        return registry.layer_type_of(self).linear_op(self, x, kernel)

    def _init_quantization(
        self, kernel_quantizer, input_quantizer, weight_transform, input_perturbation, kernel_losses
    ):
        self.kernel_quantizer = _maybe(quantizers_lib.get, kernel_quantizer)
        self.input_quantizer = _maybe(quantizers_lib.get, input_quantizer)
        self.weight_transform = _maybe(
            keras.saving.deserialize_keras_object
            if isinstance(weight_transform, dict)
            else (lambda t: t),
            weight_transform,
        )
        self.input_perturbation = _maybe(
            keras.saving.deserialize_keras_object
            if isinstance(input_perturbation, dict)
            else (lambda t: t),
            input_perturbation,
        )
        # The perturbation's state (SFP: its noise generator's seed) as layer
        # variables, so saving, loading and BackupAndRestore carry it.
        self.input_perturbation_variables = list(getattr(self.input_perturbation, "variables", ()))
        self.kernel_losses = [
            keras.saving.deserialize_keras_object(r) if isinstance(r, dict) else r
            for r in (kernel_losses or [])
        ]
        # The quantizers' variables by tensor ("kernel", "input").
        self._quantizer_weights = Untracked({"kernel": {}, "input": {}})

    def build(self, input_shape):
        super().build(input_shape)
        weights = self._quantizer_weights.value
        if self.kernel_quantizer is not None:
            weights["kernel"] = self.kernel_quantizer.build(
                tuple(self.kernel.shape), "kernel", self
            )
            self.initialize_kernel_quantizer()
        if self.input_quantizer is not None:
            weights["input"] = self.input_quantizer.build(tuple(input_shape), "input", self)

    def initialize_kernel_quantizer(self):
        """(Re)sets the kernel quantizer's state (LSQ: the steps) from the kernel.

        Called when the layer is built and by `kq.quantize_model` once the
        float weights are copied in. Runs eagerly even when the layer is
        first built inside a traced function.
        """
        if self.kernel_quantizer is None:
            return
        with _eager_scope():
            self.kernel_quantizer.initialize(
                self.transformed_kernel(), self.kernel_quantizer_weights
            )

    def uninitialized_quantizers(self):
        """The tensors ("kernel", "input") whose quantizer never saw data."""
        quantizers = {"kernel": self.kernel_quantizer, "input": self.input_quantizer}
        return [
            tensor
            for tensor, quantizer in quantizers.items()
            if quantizer is not None
            and not quantizer.is_initialized(self._quantizer_weights.value[tensor])
        ]

    def calibration_weights(self):
        """The variables a calibration forward sets: the input quantizer's,
        while it never saw data (`kq.training.initialize_activation_steps`).
        Any layer with activation quantizers may implement this method."""
        if "input" not in self.uninitialized_quantizers():
            return []
        return list(self.input_quantizer_weights.values())

    @property
    def kernel_quantizer_weights(self):
        """The kernel quantizer's variables by role (e.g. "step")."""
        return self._quantizer_weights.value["kernel"]

    @property
    def input_quantizer_weights(self):
        """The input quantizer's variables by role (e.g. "step")."""
        return self._quantizer_weights.value["input"]

    # Keras' Conv and Dense save only their own kernel and bias; the
    # quantizer variables are saved too by the generic Layer behaviour.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    # The three stages, public so export, probes and evaluation reuse them.

    def transformed_kernel(self):
        """`transform(W)`: the weights the quantizer and SymReg see."""
        kernel = self.kernel
        if self.weight_transform is not None:
            kernel = self.weight_transform(kernel)
        return kernel

    def quantized_kernel(self, training=False, transformed=None):
        """`Q_w(transform(W))`: the weights the layer computes with.

        `transformed`: `transform(W)` when the caller has it already.
        """
        kernel = self.transformed_kernel() if transformed is None else transformed
        if self.kernel_quantizer is not None:
            kernel = self.kernel_quantizer(kernel, self.kernel_quantizer_weights, training=training)
        return kernel

    def quantize_input(self, x, training=False):
        """`perturb(Q_in(x))`; the perturbation acts in training only."""
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, self.input_quantizer_weights, training=training)
        if self.input_perturbation is not None and training:
            x = self.input_perturbation(x, self.input_step())
        return x

    def input_step(self):
        """The input quantizer's step (None without an LSQ input quantizer)."""
        return self.input_quantizer_weights.get("step")

    def call(self, inputs, training=None):
        training = bool(training)
        x = self.quantize_input(inputs, training=training)
        transformed = self.transformed_kernel()
        kernel = self.quantized_kernel(training=training, transformed=transformed)
        if training:
            for loss in self.kernel_losses:
                self.add_loss(loss(transformed))
        return finish(self, self.linear_op(x, kernel))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_quantizer": _serialize(self.kernel_quantizer),
                "input_quantizer": _serialize(self.input_quantizer),
                "weight_transform": _serialize(self.weight_transform),
                "input_perturbation": _serialize(self.input_perturbation),
                "kernel_losses": [_serialize(r) for r in self.kernel_losses],
            }
        )
        return config


def add_bias(layer, outputs, bias):
    """`outputs + bias`, the bias on the layer's channel axis."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
    return outputs + bias


def finish(layer, outputs):
    """The layer's bias and activation applied to its linear output."""
    if getattr(layer, "use_bias", getattr(layer, "bias", None) is not None):
        outputs = add_bias(layer, outputs, layer.bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def check_initialized(model, action):
    """Raises a ValueError when a quantizer of `model` never saw data.

    Its step is then the placeholder 1.0: an input range of `[0, 15]` at 4
    bits whatever the data, so predictions and exports would be wrong.

    Args:
        model: a Keras model.
        action: what the caller is about to do ("predict", "export"), for
            the message.
    """
    waiting = [
        f"{layer.name}/{tensor}"
        for layer in model_graph.flat_layers(model)
        if hasattr(layer, "uninitialized_quantizers")  # QuantizeMixin, attention
        for tensor in layer.uninitialized_quantizers()
    ]
    if waiting:
        shown = ", ".join(waiting[:4]) + (
            f" and {len(waiting) - 4} more" if len(waiting) > 4 else ""
        )
        raise ValueError(
            f"Cannot {action} model '{model.name}': {len(waiting)} quantizers never saw "
            f"data, so their steps are placeholders ({shown}). Activation steps initialise "
            "from calibration data or from the first training batch. Fix: pass "
            "calibration_data=x_train[:512] to kq.quantize_model, or fit the model "
            "first, or call kq.training.initialize_activation_steps(model, x_train[:512])."
        )
