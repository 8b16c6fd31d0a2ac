"""`HessianTraceLogger`: the Hessian trace as a training curve (FPQ Fig. 5)."""

import keras

from kqrobust import validation
from kqrobust.probes.data import Batches
from kqrobust.probes.hutchinson import trace_of
from kqrobust.probes.objective import Objective


def check_every(every_n_epochs):
    return validation.positive_int(every_n_epochs, "every_n_epochs")


class HessianTraceLogger(keras.callbacks.Callback):
    """Adds `hessian_trace` (and its standard error) to the logs every N epochs.

    At the end of every `every_n_epochs`-th epoch it runs
    `kq.probes.hessian_trace` on `data` and writes `logs["hessian_trace"]`
    and `logs["hessian_trace_std_error"]`, so `History` records them and a
    `keras.callbacks.TensorBoard` placed *after* this callback in the list
    writes them as `epoch_hessian_trace`. The values are also kept in
    `self.epochs` / `self.values` / `self.std_errors`, aligned, for plotting.
    Epochs in between are not probed and get no `hessian_trace` entry.

    The probe uses the model's compiled loss (or `loss`) in inference mode
    (`training=False`) and leaves weights, BatchNorm statistics and the
    optimizer untouched. Its compiled functions are built once and reused.

    Args:
        data: `(x, y)` arrays, a `tf.data.Dataset` or batches to probe on (a
            fixed subset of the training data, e.g. 512 samples).
        every_n_epochs: probe every this many epochs (and never in between).
        tol: relative tolerance that stops probing.
        max_probes: the most probes per epoch.
        min_probes: the fewest probes per epoch.
        loss: a Keras loss, or None for the compiled loss.
        variables: "kernels" (default), "trainable" or a list of the model's variables.
        method: "forward" or "reverse" Hessian-vector products.
        batch_size: batch size used to slice arrays.
        seed: int seed; the same probe vectors every epoch, so the curve is
            not blurred by probe noise.

    Example: `model.fit(x, y, callbacks=[HessianTraceLogger((x[:512], y[:512]),
    max_probes=10)])`, run in docs/probes.md ("Curves during training").

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv:2503.11159,
        2025, Fig. 5.
        Yao et al., "PyHessian", IEEE BigData 2020.
    """

    def __init__(
        self,
        data,
        every_n_epochs=1,
        tol=1e-3,
        max_probes=20,
        min_probes=5,
        loss=None,
        variables="kernels",
        method="forward",
        batch_size=128,
        seed=0,
    ):
        super().__init__()
        self.batches = (
            Batches(data, batch_size=batch_size) if not isinstance(data, Batches) else data
        )
        self.every_n_epochs = check_every(every_n_epochs)
        self.tol = tol
        self.max_probes = max_probes
        self.min_probes = min_probes
        self.loss = loss
        self.variables = variables
        self.method = method
        self.seed = seed
        self.epochs, self.values, self.std_errors = [], [], []
        self._objective = None

    def set_model(self, model):
        super().set_model(model)
        self._objective = None  # resolved on first use: the model may compile later

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._objective is None:
            self._objective = Objective(
                self.model,
                loss=self.loss,
                variables=self.variables,
                method=self.method,
                what="HessianTraceLogger",
            )
        result = trace_of(
            self._objective,
            self.batches,
            tol=self.tol,
            max_probes=self.max_probes,
            min_probes=self.min_probes,
            seed=self.seed,
        )
        self.epochs.append(epoch)
        self.values.append(result.estimate)
        self.std_errors.append(result.std_error)
        if logs is not None:
            logs["hessian_trace"] = result.estimate
            logs["hessian_trace_std_error"] = result.std_error
