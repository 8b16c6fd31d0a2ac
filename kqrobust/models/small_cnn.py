"""A small CNN that holds every supported structure: the job's default model,
and the one the tests and examples use."""

import keras


def small_cnn(input_shape=(8, 8, 1), num_classes=10, width=16, seed=0):
    """Conv2D+BN+ReLU, DepthwiseConv2D+BN, a residual Add, pooling and Dense.

    About 1.5k parameters at the default width: trains on digits in seconds.
    Every layer keeps Keras' defaults (BatchNorm momentum 0.99 included), as a
    user's model would.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    y = keras.layers.ReLU(name="dw_relu")(y)
    y = keras.layers.Conv2D(width, 1, use_bias=False, name="pw")(y)
    y = keras.layers.BatchNormalization(name="pw_bn")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.ReLU(name="block_relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")
