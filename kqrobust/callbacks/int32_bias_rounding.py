"""`Int32BiasRounding`: the Keras model's biases where the int8 file stores them."""

from kqrobust.callbacks.inference_state import InferenceStateCallback
from kqrobust.int32_biases import round_biases_to_int32


class Int32BiasRounding(InferenceStateCallback):
    """Rounds the biases to their int32 grid before validation and at the end of training.

    Runs `kq.round_biases_to_int32(model)` whenever the weights have changed
    since the last time, so the logged `val_*` numbers and `predict` after
    `fit` are those of the full-integer file (Jacob et al., CVPR 2018, sec.
    2.4). Put it after `BatchNormRecalibration`: a folded BatchNorm's
    statistics are part of the bias it rounds.

    `kq.quantize_model`'s models add it to `fit` on their own (unless
    `model.int32_biases` is False); add it yourself in other training loops.

    Example: `model.fit(x, y, callbacks=[BatchNormRecalibration(x),
    Int32BiasRounding()])`.
    """

    def refresh(self):
        round_biases_to_int32(self.model)
