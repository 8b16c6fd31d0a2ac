"""`QuantizeConfig`: how one layer is quantized, with tfmot's method names."""

import keras

from kqrobust import quantizers as quantizers_lib
from kqrobust.api_export import kqrobust_export


def _serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def _deserialize(obj):
    return keras.saving.deserialize_keras_object(obj) if isinstance(obj, dict) else obj


@kqrobust_export
class QuantizeConfig:
    """The quantizers and hooks of one layer.

    tfmot users find its method names: `get_weights_and_quantizers`,
    `get_activations_and_quantizers`, `get_output_quantizers`, `get_config`.
    kqrobust quantizes a layer's *input* (the LSQ convention), so the
    activation quantizer of a layer is `get_input_quantizers`, and
    `get_activations_and_quantizers` / `get_output_quantizers` are empty.

    Args:
        weight_quantizer: quantizer of the kernel, or None.
        input_quantizer: quantizer of the layer input, or None.
        weight_transform: SatNL-style kernel transform, or None.
        input_perturbation: SFP-style input perturbation, or None.
        kernel_losses: regularizers of the transformed kernel (SymReg, KURE).
    """

    def __init__(
        self,
        weight_quantizer=None,
        input_quantizer=None,
        weight_transform=None,
        input_perturbation=None,
        kernel_losses=(),
    ):
        self.weight_quantizer = (
            None if weight_quantizer is None else quantizers_lib.get(weight_quantizer)
        )
        self.input_quantizer = (
            None if input_quantizer is None else quantizers_lib.get(input_quantizer)
        )
        self.weight_transform = _deserialize(weight_transform)
        self.input_perturbation = _deserialize(input_perturbation)
        self.kernel_losses = [_deserialize(r) for r in kernel_losses]

    def layer_kwargs(self):
        """Constructor arguments of the quantized layer class."""
        return {
            "kernel_quantizer": _serialize(self.weight_quantizer),
            "input_quantizer": _serialize(self.input_quantizer),
            "weight_transform": _serialize(self.weight_transform),
            "input_perturbation": _serialize(self.input_perturbation),
            "kernel_losses": [_serialize(r) for r in self.kernel_losses],
        }

    def get_weights_and_quantizers(self, layer):
        """`[(kernel variable, kernel quantizer)]` of a quantized layer."""
        if layer.kernel_quantizer is None:
            return []
        return [(layer.kernel, layer.kernel_quantizer)]

    def get_input_quantizers(self, layer):
        """`[input quantizer]` of a quantized layer."""
        return [] if layer.input_quantizer is None else [layer.input_quantizer]

    def get_activations_and_quantizers(self, layer):
        """Empty: activations are quantized at the next layer's input."""
        return []

    def get_output_quantizers(self, layer):
        """Empty: outputs are quantized at the next layer's input."""
        return []

    def get_config(self):
        return self.layer_kwargs()

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["weight_quantizer"] = config.pop("kernel_quantizer", None)
        return cls(**config)
