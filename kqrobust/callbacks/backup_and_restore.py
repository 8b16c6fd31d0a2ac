"""`BackupAndRestore` that survives a corrupt backup: named, moved aside, the previous one used."""

import os

import keras
from absl import logging

# The files Keras' BackupAndRestore writes into backup_dir (double_checkpoint adds ".bkp").
FILES = ("latest.weights.h5", "training_metadata.json")


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` keeping two backups, robust to a truncated one.

    A process killed while writing a backup (SIGTERM, preemption, a full
    disk) leaves a truncated file, and every later resume would fail on it.
    Here a backup that cannot be restored is named in a logged message and
    renamed with a `.corrupt` suffix, and training restarts from the
    previous backup (`double_checkpoint`), or from the start of the phase
    when there is none. The model's variables are as before the failed
    attempt.

    Args:
        backup_dir: as Keras'.
        save_freq: as Keras' (`"epoch"` or a number of batches).
        delete_checkpoint: as Keras'.
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=True,
            delete_checkpoint=delete_checkpoint,
        )

    def _paths(self, suffix=""):
        return [os.path.join(self.backup_dir, name + suffix) for name in FILES]

    def on_train_begin(self, logs=None):
        for attempt in ("latest", "previous"):
            problem = _unreadable(self._paths())
            if problem is None:
                state = self._model_state()
                try:
                    return super().on_train_begin(logs)
                except Exception as error:  # shapes, or h5py beyond the first check
                    for variable, value in state:
                        variable.assign(value)
                    problem = (self._paths()[0], error)
            moved = [path for path in self._paths() if os.path.exists(path)]
            for path in moved:
                os.replace(path, path + ".corrupt")
            path, error = problem
            logging.error(
                "Backup file %s could not be restored (%s: %s); moved aside: %s. Training "
                "restarts from %s.",
                path,
                type(error).__name__,
                str(error)[:200],
                ", ".join(p + ".corrupt" for p in moved),
                "the previous backup" if attempt == "latest" else "the start of the phase",
            )
            if attempt == "latest":
                for path in self._paths(".bkp"):
                    if os.path.exists(path):
                        os.replace(path, path[: -len(".bkp")])
        return super().on_train_begin(logs)

    def _model_state(self):
        variables = list(self.model.variables)
        if self.model.optimizer is not None and self.model.optimizer.built:
            variables += list(self.model.optimizer.variables)
        return [(v, keras.ops.copy(v.value)) for v in variables]


def _unreadable(paths):
    """`(path, error)` of the first backup file that cannot be read whole, or None."""
    import json

    import h5py

    weights, metadata = paths
    try:
        if os.path.exists(weights):
            with h5py.File(weights, "r") as f:
                f.visititems(
                    lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None
                )
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError...
        return weights, error
    try:
        if os.path.exists(metadata):
            with open(metadata) as f:
                json.load(f)["epoch"]
    except (ValueError, KeyError, TypeError) as error:
        return metadata, error
    return None
