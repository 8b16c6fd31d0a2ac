"""CIFAR-style ResNets (3x3 stem, no max-pool) as plain Functional models."""

import keras


def _conv_bn(x, filters, kernel_size, strides, name, weight_decay, relu=True):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _basic_block(x, filters, strides, name, weight_decay):
    shortcut = x
    y = _conv_bn(x, filters, 3, strides, f"{name}_a", weight_decay)
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", weight_decay, relu=False)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{name}_proj", weight_decay, relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _resnet(input_shape, num_classes, stem_filters, stages, weight_decay, name):
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, stem_filters, 3, 1, "stem", weight_decay)
    for stage, (filters, blocks) in enumerate(stages):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x, filters, strides, f"stage{stage + 1}_block{block + 1}", weight_decay
            )
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet20(input_shape=(32, 32, 3), num_classes=10, width=16, weight_decay=0.0):
    """ResNet-20 for CIFAR (He et al. 2016, sec. 4.2): 3 stages of 3 basic blocks.

    About 0.27M parameters at `width=16`. Projection (1x1 conv + BN)
    shortcuts where the shape changes.

    Args:
        input_shape: image shape, e.g. (32, 32, 3).
        num_classes: number of logits.
        width: filters of the first stage (doubled at each stage).
        weight_decay: L2 factor of the conv kernels (0 for none).
    """
    stages = [(width, 3), (2 * width, 3), (4 * width, 3)]
    return _resnet(input_shape, num_classes, width, stages, weight_decay, "resnet20")


def resnet18(input_shape=(32, 32, 3), num_classes=10, width=64, weight_decay=0.0):
    """ResNet-18 in its CIFAR form: 3x3 stem, no max-pool, 4 stages of 2 blocks.

    About 11M parameters at `width=64` (the FPQ and LSQ papers' CIFAR model).
    """
    stages = [(width, 2), (2 * width, 2), (4 * width, 2), (8 * width, 2)]
    return _resnet(input_shape, num_classes, width, stages, weight_decay, "resnet18")
