"""`InferenceStateCallback`: state that inference reads, refreshed after the weights change."""

import keras


class InferenceStateCallback(keras.callbacks.Callback):
    """Calls `refresh()` before each validation and when training ends, if
    an epoch has changed the weights since the last call, so the logged
    `val_*` numbers and `evaluate`, `predict` and export after `fit` see
    the state of the current weights. Subclasses implement `refresh`."""

    def __init__(self):
        super().__init__()
        self._stale = False

    def refresh(self):
        raise NotImplementedError

    def _refresh_if_stale(self):
        if self._stale:
            self.refresh()
            self._stale = False

    def on_train_begin(self, logs=None):
        self._stale = False

    def on_epoch_begin(self, epoch, logs=None):
        self._stale = True  # the epoch's steps change the weights

    def on_test_begin(self, logs=None):
        self._refresh_if_stale()

    def on_train_end(self, logs=None):
        self._refresh_if_stale()
