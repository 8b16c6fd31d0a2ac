"""Serializable quantizers and their registry (`get`, `serialize`, `deserialize`)."""

from kqrobust.quantizers.base import ALIASES
from kqrobust.quantizers.base import REGISTERED
from kqrobust.quantizers.base import MinValue
from kqrobust.quantizers.base import Quantizer
from kqrobust.quantizers.base import register_quantizer
from kqrobust.quantizers.lsq import LSQ
from kqrobust.quantizers.lsq import FixedRange
from kqrobust.quantizers.minmax import MinMax


def serialize(quantizer):
    """Returns `{"class_name": ..., "config": ...}`, a JSON-able dict.

    A plain, canonical form: equal quantizers serialize to equal dicts (Keras'
    `serialize_keras_object` may add a `shared_object_id` inside a saving
    scope, which would make equal recipes compare unequal).
    """
    return {"class_name": type(quantizer).__name__, "config": quantizer.get_config()}


def deserialize(config):
    """Inverse of `serialize`; also reads Keras' serialization format."""
    name = str(config.get("class_name", "")).split(">")[-1]
    if name not in REGISTERED:
        raise ValueError(
            f"Unknown quantizer class: {config.get('class_name')!r}. Known: {sorted(REGISTERED)}. "
            "Fix: register the class with @kq.quantizers.register_quantizer."
        )
    return REGISTERED[name].from_config(config.get("config", {}))


def get(identifier):
    """Returns a quantizer from a name, a dict or an instance.

    Names: those of `register_quantizer` (`lsq`, `lsq_plus`, `fixed`,
    `fixed_range`, `minmax`, `ema_minmax` and any registered since).
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
    "register_quantizer",
    "serialize",
]
