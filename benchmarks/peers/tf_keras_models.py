"""kqrobust's benchmark architectures rewritten in tf_keras (Keras 2), for tfmot.

tfmot 0.8.1 cannot quantize Keras 3 models, so its side of the peer benchmark
builds the same networks, layer for layer and with the same layer names, in
tf_keras. Keep these in step with `kqrobust.testing.small_cnn` and
`kqrobust.models.resnet20`: the benchmark copies the Keras 3 float weights in
by layer name and checks that the float accuracy is the same on both sides.
"""

import tf_keras as keras


def small_cnn(input_shape=(8, 8, 1), num_classes=10, width=16):
    """Mirror of `kqrobust.testing.small_cnn`."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.BatchNormalization(momentum=0.9, name="dw_bn")(y)
    y = keras.layers.ReLU(name="dw_relu")(y)
    y = keras.layers.Conv2D(width, 1, use_bias=False, name="pw")(y)
    y = keras.layers.BatchNormalization(momentum=0.9, name="pw_bn")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.ReLU(name="block_relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _conv_bn(x, filters, kernel_size, strides, name, relu=True):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _basic_block(x, filters, strides, name):
    shortcut = x
    y = _conv_bn(x, filters, 3, strides, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{name}_proj", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet20(input_shape=(32, 32, 3), num_classes=10, width=16):
    """Mirror of `kqrobust.models.resnet20` (no weight decay)."""
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, width, 3, 1, "stem")
    for stage, filters in enumerate([width, 2 * width, 4 * width]):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet20")


BUILDERS = {"small_cnn": small_cnn, "resnet20": resnet20}
