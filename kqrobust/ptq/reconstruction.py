"""AdaQuant layer-wise reconstruction, and QDrop's random dropping.

Layer by layer, in topological order, minimise on calibration data

    L = mean( (op(Q_in(x_q), Q_w(W)) + b  -  (op(x_fp, W_fp) + b_fp))^2 )

over the kernel `W`, the bias `b` and the kernel and input steps, with
Adam (one learning rate per group, cosine-decayed to 0 over the iterations
so the last updates do not leave Adam's noise floor in the result) and
straight-through gradients. Steps
are optimised as `log(s)`, so the step learning rate is relative (1e-3
moves a step by about 0.1% per iteration whatever its size; an absolute
1e-3 would be a fifth of a typical 8-bit step) and steps stay positive. `x_q` is
the layer's input in the quantized model, whose earlier layers are already
reconstructed (sequential AdaQuant); `x_fp` and the target come from the
float model. QDrop replaces each element of the quantized input by its float
counterpart with probability `1 - keep_prob` at every iteration.

The optimisation uses `tf.GradientTape` (TensorFlow backend).

Formulas: docs/methods.md#adaquant-and-qdrop.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kqrobust import validation
from kqrobust.ptq.calibration import layer_input
from kqrobust.ptq.calibration import layers_by_name
from kqrobust.ptq.layer_math import batched_mean
from kqrobust.ptq.layer_math import current_steps
from kqrobust.ptq.layer_math import preactivation
from kqrobust.ptq.ranges import RANGE_RULES
from kqrobust.quantized_layers import quantized_layers


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """Settings of AdaQuant / QDrop reconstruction (Hubara et al.; Wei et al.).

    Args:
        iterations: Adam steps per layer.
        batch_size: calibration samples per step (drawn at random).
        kernel_lr: learning rate of the kernel.
        bias_lr: learning rate of the bias.
        step_lr: learning rate of the kernel and input steps.
        keep_prob: QDrop's probability of keeping an input element quantized
            (used by `method="qdrop"` only).
        init_method: the range rule that sets the steps before
            reconstruction ("minmax", "aciq_laplace", "aciq_gauss", "mse").

    References:
        Hubara et al., "Accurate Post Training Quantization With Small
        Calibration Sets", ICML 2021 (AdaQuant). Wei et al., "QDrop: Randomly
        Dropping Quantization for Extremely Low-bit Post-Training
        Quantization", ICLR 2022.
    """

    iterations: int = 100
    batch_size: int = 50
    kernel_lr: float = 1e-5
    bias_lr: float = 1e-3
    step_lr: float = 1e-3
    keep_prob: float = 0.5
    init_method: str = "mse"

    def __post_init__(self):
        for name in ("iterations", "batch_size"):
            validation.positive_int(getattr(self, name), name)
        for name in ("kernel_lr", "bias_lr", "step_lr"):
            validation.non_negative(getattr(self, name), name, kind=None)
        validation.fraction(self.keep_prob, "keep_prob")
        validation.one_of(self.init_method, "init_method", sorted(RANGE_RULES))


class _LayerProblem:
    """The variables, optimizers and compiled step of one layer's reconstruction."""

    def __init__(self, layer, target_kernel, target_bias, settings):
        self.layer = layer
        self.target_kernel = ops.convert_to_tensor(target_kernel)
        self.target_bias = None if target_bias is None else ops.convert_to_tensor(target_bias)
        copy = lambda v: None if v is None else keras.Variable(np.asarray(v))  # noqa: E731
        log = lambda v: None if v is None else keras.Variable(np.log(np.asarray(v)))  # noqa: E731
        self.kernel = copy(layer.kernel)
        self.bias = copy(layer.bias) if layer.use_bias else None
        self.log_kernel_step, self.log_input_step = (log(s) for s in current_steps(layer))
        groups = [
            ([self.kernel], settings.kernel_lr),
            ([self.bias], settings.bias_lr),
            ([self.log_kernel_step, self.log_input_step], settings.step_lr),
        ]
        self.groups = []
        for variables, lr in groups:
            variables = [v for v in variables if v is not None]
            if variables and lr > 0:
                optimizer = keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(lr, settings.iterations)
                )
                optimizer.build(variables)
                self.groups.append((optimizer, variables))
        self.train_step = tf.function(self._train_step)

    def steps(self):
        """`(kernel_step, input_step)` from their logarithms (None where absent)."""
        return tuple(
            None if v is None else ops.exp(v) for v in (self.log_kernel_step, self.log_input_step)
        )

    def outputs(self, x_q, x_fp=None, keep_mask=None):
        kernel_step, input_step = self.steps()
        return preactivation(
            self.layer,
            x_q,
            self.kernel,
            self.bias,
            kernel_step,
            input_step,
            x_float=x_fp,
            keep_mask=keep_mask,
        )

    def target(self, x_fp):
        return preactivation(self.layer, x_fp, self.target_kernel, self.target_bias, quantize=False)

    def error(self, x_q, x_fp, batch_size):
        """Mean squared output error on the whole calibration set."""
        return float(
            batched_mean(
                lambda a, b: ops.square(self.outputs(a) - self.target(b)), (x_q, x_fp), batch_size
            )
        )

    def _train_step(self, x_q, x_fp, keep_mask):
        variables = [v for _, vs in self.groups for v in vs]
        with tf.GradientTape() as tape:
            diff = self.outputs(x_q, x_fp, keep_mask) - self.target(x_fp)
            loss = ops.mean(ops.square(diff))
        grads = tape.gradient(loss, [v.value for v in variables])
        start = 0
        for optimizer, vs in self.groups:
            optimizer.apply(grads[start : start + len(vs)], vs)
            start += len(vs)
        return loss

    def write_back(self):
        """Copies the reconstructed values into the layer's variables."""
        self.layer.kernel.assign(self.kernel)
        if self.bias is not None:
            self.layer.bias.assign(self.bias)
        for var, value in zip(current_steps(self.layer), self.steps()):
            if var is not None:
                var.assign(value)


def reconstruct(qmodel, fmodel, x, settings=None, drop=False, seed=0, batch_size=128):
    """Reconstructs every quantized layer of `qmodel` in order, in place.

    Args:
        qmodel: a PTQ model whose steps are already set (`calibrate_ranges`).
        fmodel: the float model it was built from (same layer names).
        x: calibration inputs, a NumPy array.
        settings: a `Reconstruction` (default: the reference settings).
        drop: apply QDrop's random dropping of input quantization.
        seed: seed of the batch sampling and of the dropping masks.
        batch_size: prediction batch size for collecting layer inputs.

    Returns:
        `{layer name: {"before": mse, "after": mse}}`: the mean squared
        pre-activation error on the whole calibration set, without dropping,
        before and after the layer's reconstruction.
    """
    settings = settings or Reconstruction()
    sampler, dropper = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    float_layers = layers_by_name(fmodel)
    log = {}
    for layer in quantized_layers(qmodel):
        float_layer = float_layers[layer.name]
        x_q = layer_input(qmodel, layer, x, batch_size)
        x_fp = layer_input(fmodel, float_layer, x, batch_size)
        problem = _LayerProblem(
            layer, float_layer.kernel, float_layer.bias if float_layer.use_bias else None, settings
        )
        before = problem.error(x_q, x_fp, batch_size)
        size = min(settings.batch_size, len(x))
        for _ in range(settings.iterations):
            index = sampler.choice(len(x), size=size, replace=False)
            keep_mask = dropper.random(x_q[index].shape) < settings.keep_prob if drop else None
            problem.train_step(x_q[index], x_fp[index], keep_mask)
        problem.write_back()
        log[layer.name] = {"before": before, "after": problem.error(x_q, x_fp, batch_size)}
    return log
