"""`GradientNormLogger`: the gradient norm as a training curve (FPQ Fig. 2)."""

import keras

from kqrobust.callbacks.hessian_trace_logger import check_every
from kqrobust.probes.data import Batches
from kqrobust.probes.gradient import gradient_norm_of
from kqrobust.probes.objective import Objective


class GradientNormLogger(keras.callbacks.Callback):
    """Adds `grad_norm`, `||grad_w L||` on `data`, to the logs every N epochs.

    At the end of every `every_n_epochs`-th epoch it computes
    `kq.probes.gradient_norm` on `data` (the full-data gradient of the mean
    loss, in inference mode) and writes `logs["grad_norm"]`, so `History`
    records it and a `keras.callbacks.TensorBoard` placed *after* this
    callback writes it as `epoch_grad_norm`. Values are also kept in
    `self.epochs` / `self.values`.

    Args:
        data: `(x, y)` arrays, a `tf.data.Dataset` or batches.
        every_n_epochs: compute every this many epochs.
        loss: a Keras loss, or None for the compiled loss.
        variables: "kernels" (default), "trainable" or a list of the model's variables.
        batch_size: batch size used to slice arrays.

    Example: `model.fit(x, y, callbacks=[GradientNormLogger((x[:512], y[:512]))])`,
    run in docs/probes.md ("Curves during training").

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv:2503.11159,
        2025, Fig. 2.
    """

    def __init__(self, data, every_n_epochs=1, loss=None, variables="kernels", batch_size=128):
        super().__init__()
        self.batches = (
            Batches(data, batch_size=batch_size) if not isinstance(data, Batches) else data
        )
        self.every_n_epochs = check_every(every_n_epochs)
        self.loss = loss
        self.variables = variables
        self.epochs, self.values = [], []
        self._objective = None

    def set_model(self, model):
        super().set_model(model)
        self._objective = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._objective is None:
            self._objective = Objective(
                self.model, loss=self.loss, variables=self.variables, what="GradientNormLogger"
            )
        value = gradient_norm_of(self._objective, self.batches)
        self.epochs.append(epoch)
        self.values.append(value)
        if logs is not None:
            logs["grad_norm"] = value
