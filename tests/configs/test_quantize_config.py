"""`QuantizeConfig`'s tfmot method names, as a contract on the layer it configures."""

import keras
import numpy as np

from kqrobust import configs
from kqrobust import layers
from kqrobust import quantizers
from kqrobust.regularizers import SymReg
from kqrobust.transforms import SatNL


def test_tfmot_methods_return_the_layers_own_variables_and_quantizers():
    config = configs.QuantizeConfig(
        weight_quantizer=quantizers.LSQ(bits=4, channel_axis=-1),
        input_quantizer=quantizers.LSQ(bits=8, signed=False, per_sample=True),
        weight_transform=SatNL(0.5),
        kernel_losses=[SymReg(0.1, 0.1)],
    )
    layer = layers.QuantDense(3, **config.layer_kwargs())
    layer(np.ones((2, 4), "float32"))
    [(kernel, quantizer)] = config.get_weights_and_quantizers(layer)
    assert kernel is layer.kernel and quantizer == config.weight_quantizer
    assert config.get_input_quantizers(layer) == [config.input_quantizer]
    assert config.get_activations_and_quantizers(layer) == []
    assert config.get_output_quantizers(layer) == []
    revived = configs.QuantizeConfig.from_config(config.get_config())
    assert revived.layer_kwargs() == config.layer_kwargs()
    assert keras.saving.serialize_keras_object(revived.weight_transform)["config"] == {"alpha": 0.5}


def test_a_float_layer_has_no_quantizers():
    config = configs.QuantizeConfig()
    layer = layers.QuantDense(3, **config.layer_kwargs())
    layer(np.ones((2, 4), "float32"))
    assert config.get_weights_and_quantizers(layer) == []
    assert config.get_input_quantizers(layer) == []
