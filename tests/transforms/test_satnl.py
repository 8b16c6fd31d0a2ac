"""SatNL: `alpha * tanh(W / alpha)` in the layers, seen by the quantizer and SymReg, folded out."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.testing import TestCase


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_transform_matches_numpy(alpha):
    w = np.random.default_rng(0).normal(0, 1, (3, 3, 2, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(kq.transforms.SatNL(alpha)(w)), alpha * np.tanh(w / alpha), rtol=1e-6, atol=1e-7
    )


def test_quantizer_and_symreg_see_the_transformed_kernel(digits):
    (x, _), _ = digits
    qmodel = kq.quantize_model(
        kq.testing.small_cnn(width=4), recipe=kq.Recipe(satnl_alpha=0.5, symreg=(0.1, 0.1))
    )
    qmodel(x[:16], training=True)
    layer = qmodel.get_layer("pw")
    fw = 0.5 * np.tanh(layer.kernel.numpy() / 0.5)
    np.testing.assert_allclose(layer.transformed_kernel().numpy(), fw, rtol=1e-6, atol=1e-7)
    # The quantized kernel is on the grid of f(W): step * integer.
    step = layer.kernel_quantizer_weights["step"].numpy()
    codes = layer.quantized_kernel().numpy() / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
    expected = kq.regularizers.SymReg(0.1, 0.1)(fw)
    assert any(abs(float(loss) - float(expected)) < 1e-6 for loss in qmodel.losses)


def test_fold_equality_through_float_view(digits):
    (x, y), _ = digits
    rmodel = kq.robustify(kq.testing.small_cnn(width=4), recipe=kq.Recipe(satnl_alpha=0.3))
    rmodel.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rmodel.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    folded = kq.ptq.float_view(rmodel)
    assert not any(isinstance(l, kq.layers.QuantizeMixin) for l in folded.layers)
    for name in ("stem", "dw", "pw", "conv2", "logits"):
        np.testing.assert_allclose(
            folded.get_layer(name).kernel.numpy(),
            0.3 * np.tanh(rmodel.get_layer(name).kernel.numpy() / 0.3),
            rtol=1e-6,
            atol=1e-7,
        )
    np.testing.assert_allclose(
        folded.predict(x[:64], verbose=0), rmodel.predict(x[:64], verbose=0), rtol=1e-5, atol=1e-5
    )


def test_serialization_and_validation():
    TestCase().run_serialization_test(kq.transforms.SatNL(0.5))
    with pytest.raises(
        ValueError,
        match=r"satnl_alpha must be a positive number. Received: satnl_alpha=0. Fix: .*plain tanh",
    ):
        kq.transforms.SatNL(0)
