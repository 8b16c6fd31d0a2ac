"""Serializable quantizers and their registry (`get`, `serialize`, `deserialize`)."""

import keras

from kqrobust.quantizers.base import MinValue
from kqrobust.quantizers.base import Quantizer
from kqrobust.quantizers.lsq import LSQ
from kqrobust.quantizers.lsq import FixedRange
from kqrobust.quantizers.minmax import MinMax

ALL_OBJECTS = {LSQ, FixedRange, MinMax}
ALIASES = {
    "lsq": LSQ,
    "lsq_plus": lambda: LSQ(learn_offset=True),
    "fixed": FixedRange,
    "fixed_range": FixedRange,
    "minmax": MinMax,
    "ema_minmax": lambda: MinMax(ema_decay=0.999),
}


def serialize(quantizer):
    """Returns a JSON-able dict for `quantizer` (Keras' serialization format)."""
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config):
    """Inverse of `serialize`."""
    return keras.saving.deserialize_keras_object(
        config, module_objects={c.__name__: c for c in ALL_OBJECTS}
    )


def get(identifier):
    """Returns a quantizer from a name, a dict or an instance.

    Names: `lsq`, `lsq_plus`, `fixed_range`, `minmax`, `ema_minmax`.
    """
    if isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in ALIASES:
            raise ValueError(
                f"Unknown quantizer: '{identifier}'. Known quantizers: "
                f"{sorted(ALIASES)}, or pass a dict or a Quantizer instance."
            )
        return ALIASES[key]()
    raise ValueError(
        "A quantizer must be a name, a dict or a kq.quantizers.Quantizer. "
        f"Received: {identifier!r} of type {type(identifier).__name__}"
    )


__all__ = [
    "FixedRange",
    "LSQ",
    "MinMax",
    "MinValue",
    "Quantizer",
    "deserialize",
    "get",
    "serialize",
]
