"""One decorator that publishes a name and registers it for `.keras` loading.

Mirrors keras-hub's `keras_hub_export`: everything decorated here loads with
`keras.models.load_model(path)` in safe mode and without `custom_objects`.
"""

import keras

PACKAGE = "kqrobust"


def kqrobust_export(cls):
    """Registers `cls` as `kqrobust>ClassName` for Keras serialization."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
