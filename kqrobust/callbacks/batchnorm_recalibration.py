"""`BatchNormRecalibration`: BatchNorm statistics that describe the trained weights."""

from kqrobust.callbacks.inference_state import InferenceStateCallback
from kqrobust.io_utils import print_msg
from kqrobust.recalibration import recalibrate_batchnorm


class BatchNormRecalibration(InferenceStateCallback):
    """Re-estimates BatchNorm statistics before validation and at the end of training.

    Runs `kq.recalibrate_batchnorm(model, data)` (Nagel et al., ICML 2022,
    sec. 4.1) whenever the weights have changed since the last time: before
    each validation inside `fit`, so the logged `val_*` numbers are those
    `predict` will give, and when training ends, so `evaluate`, `predict` and
    export use statistics of the final weights. The train step itself is
    untouched, so it works with every recipe (SAM/ASAM, FPQ) and strategy.

    `kq.quantize_model`'s models add it to `fit` on their own, with the
    training data; add it yourself for other models or custom setups.

    Args:
        data: training inputs (array, `(x, y)`, `tf.data.Dataset` or
            iterable of batches).
        num_samples: samples per recalibration, at most.
        batch_size: the batch size for array inputs.
        verbose: 1 prints a line per recalibration.

    Example: `model.fit(x, y, callbacks=[BatchNormRecalibration(x)])`, run in
    docs/qat.md ("BatchNorm under QAT").
    """

    def __init__(self, data, num_samples=2048, batch_size=32, verbose=0):
        super().__init__()
        self.data = data
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.verbose = verbose

    def refresh(self):
        names = recalibrate_batchnorm(self.model, self.data, self.num_samples, self.batch_size)
        if self.verbose and names:
            print_msg(
                f"[kqrobust] BatchNorm statistics of {len(names)} layers re-estimated "
                f"on {self.num_samples} samples at most"
            )
