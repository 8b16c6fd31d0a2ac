"""`TerminateOnNaN` that says what went bad: the loss, or which quantizer step."""

import math

import keras
import numpy as np



class TerminateOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and names the culprit.

    Keras' own `TerminateOnNaN` only says that the loss is NaN. This one then
    inspects the model's variables and reports the quantizer steps (variables
    named `*_step`) and other weights that are not finite, so a user can tell
    an exploding loss from a collapsed LSQ step.

    Args:
        check_every: also scan the variables every `check_every` batches even
            when the loss is finite (0: only when the loss is not finite).
    """

    def __init__(self, check_every=0):
        super().__init__()
        if not isinstance(check_every, int) or check_every < 0:
            raise ValueError(
                f"check_every must be an int >= 0. Received: check_every={check_every!r}")
        self.check_every = check_every
        self.message = None

    def non_finite_variables(self):
        """Paths of the model variables holding NaN or Inf, quantizer steps first."""
        bad = [v.path for v in self.model.weights
               if not np.isfinite(keras.ops.convert_to_numpy(v)).all()]
        return sorted(bad, key=lambda path: (not path.endswith("_step"), path))

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        loss_bad = loss is not None and not math.isfinite(float(loss))
        scheduled = self.check_every and (batch + 1) % self.check_every == 0
        if not (loss_bad or scheduled):
            return
        bad = self.non_finite_variables()
        if not (loss_bad or bad):
            return
        parts = [f"batch {batch}: loss={loss}"]
        if bad:
            steps = [p for p in bad if p.endswith("_step")]
            if steps:
                parts.append(f"non-finite quantizer steps: {steps}")
            others = [p for p in bad if not p.endswith("_step")]
            if others:
                parts.append(f"non-finite weights: {others[:10]}")
        else:
            parts.append("every weight is finite, so the loss itself overflowed "
                         "(check the learning rate and the data)")
        self.message = "Training stopped, NaN/Inf detected at " + "; ".join(parts)
        print(self.message)
        self.model.stop_training = True
