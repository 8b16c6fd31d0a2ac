"""One example layer per registered layer type, for the registry's contract test.

`EXAMPLES` maps each registered Keras class, and each class with a rewrite
rule (`kq.layers.rewrites`), to `(make, input_shape)` or `(make,
input_shape, call)`: a factory of a fresh float layer with Keras' default
hyperparameters, an input shape without the batch axis, and how the layer
is called on one Keras tensor (default `layer(x)`).
`tests/layers/test_registry.py` fails for a registered type that has no
example here.
"""

import keras

EXAMPLES = {
    keras.layers.Conv2D: (lambda: keras.layers.Conv2D(6, 3, padding="same"), (8, 8, 3)),
    keras.layers.DepthwiseConv2D: (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
        (8, 8, 3),
    ),
    keras.layers.Dense: (lambda: keras.layers.Dense(6), (12,)),
    keras.layers.Conv2DTranspose: (
        lambda: keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same"),
        (4, 4, 3),
    ),
    keras.layers.EinsumDense: (
        lambda: keras.layers.EinsumDense("abc,cde->abde", output_shape=(5, 2, 4), bias_axes="de"),
        (5, 6),
    ),
    keras.layers.Conv1D: (lambda: keras.layers.Conv1D(6, 3, padding="causal"), (12, 3)),
    keras.layers.DepthwiseConv1D: (
        lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
        (12, 3),
    ),
    keras.layers.SeparableConv2D: (
        lambda: keras.layers.SeparableConv2D(6, 3, depth_multiplier=2, padding="same"),
        (8, 8, 3),
    ),
    keras.layers.SeparableConv1D: (lambda: keras.layers.SeparableConv1D(6, 3), (12, 3)),
    keras.layers.MultiHeadAttention: (
        lambda: keras.layers.MultiHeadAttention(num_heads=2, key_dim=4),
        (6, 8),
        lambda layer, x: layer(x, x),
    ),
}
