"""NumPy-side references for the Hessian probes' tests: explicit Hessians of tiny models."""

import keras
import numpy as np
import tensorflow as tf

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_mlp(dtype="float64", hidden=24, seed=0):
    """6 -> hidden (tanh) -> 3 logits: 243 parameters at hidden=24."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), dtype=dtype)
    h = keras.layers.Dense(hidden, activation="tanh", dtype=dtype, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, dtype=dtype, name="logits")(h))


def tiny_data(n=64, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(dtype), rng.integers(0, 3, n).astype("int64")


def flat_gradient(model, x, y):
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(LOSS.call(y, model(x, training=False)))
    return np.concatenate([np.ravel(g) for g in tape.gradient(loss, variables)])


def explicit_hessian(model, x, y):
    """The full Hessian as a matrix, by the Jacobian of the gradient."""
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(LOSS.call(y, model(x, training=False)))
        grads = inner.gradient(loss, variables)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0)
    blocks = outer.jacobian(flat, variables)
    size = int(flat.shape[0])
    return np.concatenate([np.reshape(b, (size, -1)) for b in blocks], axis=1)


def unflatten(vector, variables):
    out, start = [], 0
    for v in variables:
        n = int(np.prod(v.shape))
        out.append(np.reshape(vector[start : start + n], tuple(v.shape)))
        start += n
    return out


def flatten(tensors):
    return np.concatenate([np.ravel(np.asarray(t)) for t in tensors])
