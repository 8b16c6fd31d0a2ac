"""`Untracked` keeps what it holds out of Keras' attribute tracking."""

import keras

from kqrobust.untracked import Untracked


def _model(units):
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(units)(inputs))


def test_a_held_model_adds_no_weights():
    outer, teacher = _model(2), _model(4)
    tracked_before = len(outer.weights)
    outer.holder = Untracked(teacher)
    assert len(outer.weights) == tracked_before
    outer.tracked = _model(5)  # the plain assignment Keras tracks, for contrast
    assert len(outer.weights) == tracked_before + 2
    assert outer.holder.value is teacher
