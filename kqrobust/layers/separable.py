"""SeparableConv1D and SeparableConv2D: quantized as a depthwise and a 1x1 convolution.

A separable convolution is a depthwise convolution (kernel size, strides,
padding, dilation, depth multiplier) followed by a pointwise (1x1, stride 1)
convolution with the bias and activation. TFLite has no separable op: the
converter lowers it to DEPTHWISE_CONV_2D + CONV_2D, with an int8 tensor in
between. tfmot quantizes it by rewriting it into DepthwiseConv2D + Conv2D
(its `SeparableConvQuantize` transform); the rewrite rules here do the same,
so both parts get their own weight and input quantizers and are exported
through the registered DepthwiseConv and Conv paths.

References:
    Chollet, "Xception: Deep Learning with Depthwise Separable
    Convolutions", CVPR 2017 (the factorization).
    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
    Mobile Vision Applications", 2017 (depthwise + pointwise layers).
"""

import keras

from kqrobust.layers import rewrites

# The depthwise and pointwise classes of each separable class.
_PARTS = {
    keras.layers.SeparableConv1D: (keras.layers.DepthwiseConv1D, keras.layers.Conv1D),
    keras.layers.SeparableConv2D: (keras.layers.DepthwiseConv2D, keras.layers.Conv2D),
}


def expand_separable(layer):
    """`layer`'s depthwise and pointwise layers, and their weight copier.

    The depthwise layer (`{name}_depthwise`) has no bias and a linear
    activation; the pointwise layer (`{name}_pointwise`) has `layer`'s
    filters, bias and activation.

    Args:
        layer: a `keras.layers.SeparableConv1D` or `SeparableConv2D`.

    Returns:
        `([depthwise, pointwise], copy_weights)` as `rewrites.register_rewrite`
        takes them.
    """
    depthwise_class, pointwise_class = _PARTS[type(layer)]
    config = layer.get_config()
    rank = len(config["kernel_size"])
    common = {
        "data_format": config["data_format"],
        "dtype": config["dtype"],
        "trainable": config["trainable"],
    }
    depthwise = depthwise_class(
        kernel_size=config["kernel_size"],
        strides=config["strides"],
        padding=config["padding"],
        dilation_rate=config["dilation_rate"],
        depth_multiplier=config["depth_multiplier"],
        activation=None,
        use_bias=False,
        depthwise_initializer=config["depthwise_initializer"],
        depthwise_regularizer=config["depthwise_regularizer"],
        depthwise_constraint=config["depthwise_constraint"],
        name=f"{layer.name}_depthwise",
        **common,
    )
    pointwise = pointwise_class(
        filters=config["filters"],
        kernel_size=(1,) * rank,
        strides=1,
        padding="valid",
        activation=config["activation"],
        use_bias=config["use_bias"],
        kernel_initializer=config["pointwise_initializer"],
        bias_initializer=config["bias_initializer"],
        kernel_regularizer=config["pointwise_regularizer"],
        bias_regularizer=config["bias_regularizer"],
        activity_regularizer=config["activity_regularizer"],
        kernel_constraint=config["pointwise_constraint"],
        bias_constraint=config["bias_constraint"],
        name=f"{layer.name}_pointwise",
        **common,
    )

    def copy_weights(parts):
        parts[0].kernel.assign(layer.depthwise_kernel)
        parts[1].kernel.assign(layer.pointwise_kernel)
        if layer.use_bias:
            parts[1].bias.assign(layer.bias)

    return [depthwise, pointwise], copy_weights


for _separable_class in _PARTS:
    rewrites.register_rewrite(_separable_class, expand_separable)
