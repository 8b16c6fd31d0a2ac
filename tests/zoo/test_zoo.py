"""Model-zoo acceptance: the models users bring, with Keras' default hyperparameters.

Each model is trained float on digits, quantized with `kq.quantize_model`,
QAT-trained a few epochs at W8A8 and W4A8, and exported to full-int8 TFLite.
Each must have every kernel layer quantized, test accuracy within 3 points
of float, LiteRT argmax agreement with the Keras QAT model of at least 98%,
and no float op. `benchmarks/zoo.py` runs the same cases and writes
`docs/results/zoo.md`.
"""

import pytest

from kqrobust.testing import zoo

# The CI subset: two small networks at W4A8 (the keras.applications cases take minutes each;
# SeparableConv2D export parity is in the fast tests, tests/export/test_separable_export.py).
CI_CASES = {("kws_conv1d", 4), ("encoder_decoder", 4)}

_FLOAT_MODELS = {}


def _float_model(name, digits):
    if name not in _FLOAT_MODELS:
        _FLOAT_MODELS[name] = zoo.train_float(name, digits)
    return _FLOAT_MODELS[name]


def _cases():
    for name in zoo.ZOO:
        for bits in (8, 4):
            marks = [pytest.mark.slow] + ([pytest.mark.ci] if (name, bits) in CI_CASES else [])
            yield pytest.param(name, bits, marks=marks, id=f"{name}-w{bits}a8")


@pytest.mark.parametrize("name,weight_bits", list(_cases()))
def test_zoo_model_survives_qat_and_int8_export(name, weight_bits, digits):
    result = zoo.run_case(
        name,
        _float_model(name, digits),
        digits,
        weight_bits,
        export_samples=200,
    )
    assert result["float_layers"] == [], result
    assert result["quantized_layers"] == result["kernel_layers"] > 0, result
    assert result["float_accuracy"] > 0.5, result  # the float fit itself worked
    assert result["qat_accuracy"] >= result["float_accuracy"] - 0.03, result
    assert result["float_ops"] == [], result
    assert result["agreement"] >= 0.98, result
