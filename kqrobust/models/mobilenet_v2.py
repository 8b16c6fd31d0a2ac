"""MobileNetV2 in its CIFAR form (3x3 stride-1 stem) as a plain Functional model."""

import keras

# (expansion t, output channels c, repeats n, first stride s), Sandler et al.
# 2018, Table 2, with the second stage's stride set to 1 for 32x32 inputs.
CIFAR_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _round_channels(channels, divisor=8):
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _inverted_residual(x, expansion, filters, strides, name):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = keras.layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(
            y
        )
        y = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2(input_shape=(32, 32, 3), num_classes=10, alpha=1.0, blocks=CIFAR_BLOCKS):
    """MobileNetV2 (Sandler et al., CVPR 2018) for CIFAR-sized inputs.

    A 3x3 stride-1 stem and no early down-sampling, as in the FPQ and SymReg
    papers' CIFAR experiments. About 2.2M parameters at `alpha=1`.

    Args:
        input_shape: image shape.
        num_classes: number of logits.
        alpha: width multiplier.
        blocks: `(t, c, n, s)` rows of the inverted-residual stages.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        _round_channels(32 * alpha), 3, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for stage, (t, c, n, s) in enumerate(blocks):
        for i in range(n):
            x = _inverted_residual(
                x, t, _round_channels(c * alpha), s if i == 0 else 1, f"block{stage + 1}_{i + 1}"
            )
    x = keras.layers.Conv2D(
        max(1280, _round_channels(1280 * alpha)), 1, use_bias=False, name="head_conv"
    )(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")
