"""Weight regularizers (`SymReg`, `KURE`) and their registry.

`get`, `serialize` and `deserialize` take and give names (`"symreg"`,
`"kure"`), dicts or instances; Keras' own regularizers pass through.
"""

import keras

from kqrobust.regularizers.kure import KURE
from kqrobust.regularizers.kure import kurtosis
from kqrobust.regularizers.symreg import SymReg
from kqrobust.regularizers.symreg import symmetry_losses

ALL_OBJECTS = {SymReg, KURE}
ALIASES = {"symreg": SymReg, "kure": KURE}


def serialize(regularizer):
    """A JSON-able dict (Keras' serialization format)."""
    return keras.saving.serialize_keras_object(regularizer)


def deserialize(config):
    """Inverse of `serialize`; kqrobust and Keras regularizers."""
    return keras.saving.deserialize_keras_object(
        config, module_objects={c.__name__: c for c in ALL_OBJECTS}
    )


def get(identifier):
    """A regularizer from a name, a dict or an instance (None stays None).

    Names: `symreg`, `kure`, and Keras' (`l1`, `l2`, `l1_l2`, ...).
    """
    if identifier is None or isinstance(identifier, keras.regularizers.Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ALIASES:
            return ALIASES[key]()
        try:
            return keras.regularizers.get(key)
        except ValueError as err:
            raise ValueError(
                f"Unknown regularizer: '{identifier}'. kqrobust regularizers: "
                f"{sorted(ALIASES)}; Keras' names work too. Pass a name, a dict or "
                "a keras.regularizers.Regularizer."
            ) from err
    if callable(identifier):
        return identifier
    raise ValueError(
        "A regularizer must be a name, a dict or a keras.regularizers.Regularizer. "
        f"Received: {identifier!r} of type {type(identifier).__name__}"
    )


__all__ = ["KURE", "SymReg", "deserialize", "get", "kurtosis", "serialize", "symmetry_losses"]
