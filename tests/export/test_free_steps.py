"""A channel whose weights all quantize to 0 exports whatever its learned step.

FPQ training on digits left such channels with steps of ~10^3 behind a
BatchNorm scale of ~30: the folded requantization multiplier was out of the
range XNNPACK accepts and LiteRT failed to prepare the model.
"""

import keras
import numpy as np

import kqrobust as kq
from kqrobust import export
from kqrobust.export import ranges


def test_tame_free_steps_matches_numpy():
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, (3, 3, 4, 5))
    step = np.array([0.01, 50.0, 0.02, 0.03, 7.0])
    kernel[..., 4] *= 1e-3  # all |w| < step / 2: codes all 0
    tamed = ranges.tame_free_steps(step, kernel)
    free = np.abs(kernel).reshape(-1, 5).max(0) <= step / 2
    np.testing.assert_array_equal(free, [False, True, False, False, True])
    np.testing.assert_allclose(tamed, np.where(free, np.median(step[~free]), step))


def test_huge_free_step_behind_batchnorm_runs_in_litert(float_cnn, digits, tmp_path):
    (x_train, _), (x_test, y_test) = digits
    qmodel = kq.quantize_model(
        float_cnn, weight_bits=8, activation_bits=8, calibration_data=x_train[:64]
    )
    stem = qmodel.get_layer("stem")
    step = stem.kernel_quantizer_weights["step"]
    step.assign(
        keras.ops.convert_to_numpy(step) * np.eye(1, step.shape[0], 0)[0] * 1e5
        + keras.ops.convert_to_numpy(step)
    )  # channel 0: every code 0
    bn = qmodel.get_layer("stem_bn")
    mean, variance = (keras.ops.convert_to_numpy(v) for v in (bn.moving_mean, bn.moving_variance))
    mean[0], variance[0] = 0.0, 0.0  # a ~30x folded scale on top, no shift
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(variance)
    path = str(tmp_path / "free.tflite")
    export.to_tflite(qmodel, x_train[:200], path, io_dtype="int8")
    reference = export.export_model(qmodel, x_train[:200])
    result = export.verify(path, reference, x_test, labels=y_test, print_report=False)
    # The edit switches channel 0 off, so the model is poor (~40%) and its
    # logits near ties: agreement is lower than for a trained model.
    assert result.agreement >= 0.97 and result.mean_abs_diff_lsb <= 1.0
