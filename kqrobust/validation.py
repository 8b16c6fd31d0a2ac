"""Argument checks at the API boundary: one home for the messages users read.

Every check raises a ValueError that names the argument, the value received
and the fix, in Keras' style: `"batch_size must be a positive int. Received:
batch_size=0. Fix: ..."`.
"""

import numpy as np


def positive_int(value, name, fix=None):
    """Returns `value` if it is an int >= 1 (bools are refused), else raises."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}." + _fix(fix))
    return int(value)


def _fix(fix):
    return f" Fix: {fix}" if fix else ""


def _is_int(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def int_in_range(value, name, low, high, fix=None):
    """Returns `value` if it is an int in `[low, high]` (bools are refused), else raises."""
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(
            f"{name} must be an int in [{low}, {high}]. Received: {name}={value!r}." + _fix(fix)
        )
    return int(value)


def int_at_least(value, name, low, fix=None):
    """Returns `value` if it is an int >= `low` (bools are refused), else raises."""
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}." + _fix(fix))
    return int(value)


def non_negative_int(value, name, fix=None):
    """Returns `value` if it is an int >= 0 (bools are refused), else raises."""
    return int_at_least(value, name, 0, fix=fix)


def non_negative(value, name, kind="number", fix=None):
    """Returns `value` as a float if it is a number >= 0, else raises.

    `kind` names the expected type in the message ("number", "float", or
    None for just ">= 0").
    """
    if not _is_number(value) or not value >= 0:
        expected = f"a {kind} >= 0" if kind else ">= 0"
        raise ValueError(f"{name} must be {expected}. Received: {name}={value!r}." + _fix(fix))
    return float(value)


def positive(value, name, fix=None):
    """Returns `value` as a float if it is a finite number > 0, else raises."""
    if not _is_number(value) or not 0 < value < float("inf"):
        raise ValueError(
            f"{name} must be a positive number. Received: {name}={value!r}." + _fix(fix)
        )
    return float(value)


def fraction(value, name, fix=None):
    """Returns `value` as a float if it is a number in (0, 1], else raises."""
    if not _is_number(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]. Received: {name}={value!r}." + _fix(fix))
    return float(value)


def one_of(value, name, choices, fix=None, in_words=False):
    """Returns `value` if it is one of `choices`, else raises listing them.

    The message lists the choices as a list (`must be one of ['a', 'b']`),
    or with `in_words` as a phrase (`must be 'a' or 'b'`).
    """
    if value not in choices:
        choices = [repr(c) for c in choices]
        listed = (
            f"{', '.join(choices[:-1])} or {choices[-1]}"
            if in_words and len(choices) > 1
            else f"one of [{', '.join(choices)}]"
        )
        raise ValueError(f"{name} must be {listed}. Received: {name}={value!r}." + _fix(fix))
    return value


def known(value, what, choices):
    """Returns `value` if it is one of `choices` (names of `what`: "model", ...), else raises.

    The message is `"Unknown model: 'vgg'. Choose one of ['resnet20', ...]."`.
    """
    if value not in choices:
        raise ValueError(f"Unknown {what}: {value!r}. Choose one of {list(choices)}.")
    return value


def optional_seed(seed, name="seed"):
    """Returns `seed` if it is an int or None, else raises."""
    if seed is not None and not _is_int(seed):
        raise ValueError(f"{name} must be an int or None. Received: {name}={seed!r}.")
    return seed


def shape_tuple(value, name="input_shape"):
    """Returns `value` as a tuple of positive ints (a shape without the batch axis)."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) > 0
        and all(
            not isinstance(d, bool) and isinstance(d, (int, np.integer)) and d > 0 for d in value
        )
    )
    if not ok:
        raise ValueError(
            f"{name} must be a tuple of positive ints without the batch axis. "
            f"Received: {name}={value!r}. Fix: pass e.g. {name}=(32, 32, 3)."
        )
    return tuple(int(d) for d in value)


def mapping(value, name, example):
    """Returns `value` (a dict, or {} for None), else raises naming the expected form."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"{name} must be a dict. Received: {name} of type {type(value).__name__} "
            f"({value!r:.80}). Fix: pass a dict such as {example}."
        )
    return value


def non_finite_position(x):
    """`(sample, flat index within it)` of the first NaN/Inf of array `x`, or None."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
        return None
    bad = ~np.isfinite(x.reshape(len(x), -1))
    rows = np.flatnonzero(bad.any(axis=1))
    if not len(rows):
        return None
    return int(rows[0]), int(np.argmax(bad[rows[0]]))


def finite_array(x, name, batch=None, offset=0):
    """Returns `x` if every value is finite, else raises naming where the first NaN/Inf is.

    Args:
        x: an array of samples `(N, ...)` (non-float arrays pass).
        name: what `x` is, for the message (e.g. "calibration_data").
        batch: the index of the batch `x` is, or None for a whole array.
        offset: the index in the whole data of `x`'s first sample.
    """
    position = non_finite_position(x)
    if position is None:
        return x
    sample, index = position
    x = np.asarray(x)
    value = x.reshape(len(x), -1)[sample, index]
    where = (
        f"sample {sample + offset}"
        if batch is None
        else f"batch {batch}, sample {sample} within the batch (sample {sample + offset} overall)"
    )
    count = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
    raise ValueError(
        f"{name} holds a non-finite value ({value}) at {where}, element {index}; "
        f"{count} sample(s) of this {'batch' if batch is not None else 'array'} hold NaN or Inf. "
        "Quantization ranges, steps and statistics set from them would be NaN, and nothing "
        "was written into the model. Fix: drop or clean those samples, e.g. "
        "x = x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]."
    )


def layer_overrides(value):
    """`layer_overrides` of `kq.quantize_model` / `kq.ptq.quantize` as a dict (None: {})."""
    return mapping(
        value,
        "layer_overrides",
        "{'head': {'skip': True}, '.*dw.*': {'weight_bits': 8}} (layer name or regex -> settings)",
    )
