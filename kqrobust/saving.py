"""`kq.load_model` / `kq.save_model`: `.keras` files with kqrobust's classes, checked and atomic."""

import os
import zipfile

import keras

from kqrobust.atomic import atomic_path


def save_model(model, path):
    """`model.save(path)` atomically: a reader or a resumed job never sees half a file.

    Args:
        model: a Keras model.
        path: a `.keras` path; a missing directory is created.
    """
    with atomic_path(path) as temporary:
        model.save(temporary)


def load_model(path, compile=True, safe_mode=True):
    """Loads a `.keras` model saved by kqrobust (or plain Keras).

    Importing kqrobust registers its layers, quantizers and `QuantModel`,
    so this is `keras.models.load_model` with a clear error for a missing,
    truncated or corrupt file instead of an archive or h5py error. (Plain
    `keras.models.load_model` works too once `kqrobust` is imported.)

    Args:
        path: a `.keras` file.
        compile: as `keras.models.load_model`.
        safe_mode: as `keras.models.load_model`.

    Returns:
        The model (a `kq.training.QuantModel` for kqrobust's QAT/PTQ models).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a complete `.keras` archive.

    Example: `kq.load_model("runs/demo/qat.keras")`, run in docs/qat.md
    ("Saving and loading").
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No model file at {path!r}. Fix: check the path (a job writes float.keras and "
            "qat.keras into its out_dir)."
        )
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a complete .keras file (a .keras file is a zip archive; this one "
            f"of {os.path.getsize(path)} bytes is truncated or corrupt). Fix: save the model "
            "again, or re-run the job that wrote it."
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(
            f"{path!r} could not be read as a .keras model: {type(error).__name__}: {error}. "
            "Fix: save the model again, or re-run the job that wrote it."
        ) from error
