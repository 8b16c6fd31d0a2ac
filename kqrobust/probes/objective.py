"""The loss a probe differentiates: which loss, which weights, which mode.

Choices, shared by every probe (documented on the public functions):
  - Loss: the `loss=` argument when given, else the model's compiled loss
    (`model.loss`, the object passed to `compile`). Only the data term is
    used: weight regularizers and `model.losses` (SymReg, KURE, L2) are left
    out, as PyHessian differentiates `criterion(model(x), y)` only. The loss
    is the mean over samples, batches weighted by their size, so the result
    does not depend on the batch size.
  - Mode: the model is called with `training=False`: BatchNorm uses its
    moving statistics (and never updates them), dropout and FPQ's SFP noise
    are off, as PyHessian evaluates in eval mode. The probes save and
    restore every model variable, so a quantizer that initialises its step
    on its first batch is left untouched too.
  - Weights: `"kernels"` (the default: the kernels of Conv2D,
    DepthwiseConv2D and Dense layers, quantized or not: the weights that
    quantization perturbs), `"trainable"` (every trainable variable:
    kernels, biases, BatchNorm scales and offsets, LSQ steps) or a list of the
    model's variables. LSQ steps are left out by default because they are
    trained through LSQ's gradient scale `s*g + stop_gradient(s - s*g)`,
    `g = 1/sqrt(N*Qp)` (Esser et al., "Learned Step Size Quantization",
    ICLR 2020, sec. 2.2): differentiated as variables, a step's gradient is
    `g * dL/ds` and its Hessian entries `g^2 * d2L/ds2`, so with
    `"trainable"` they enter the trace and norms scaled by `g` (on a digits
    CNN at W4A4, the ten steps' trace is 0.25 against 800 for the kernels).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from kqrobust import model_graph
from kqrobust import ops as kq_ops
from kqrobust import validation
from kqrobust.probes.data import check_model

VARIABLE_CHOICES = ("kernels", "trainable")
# What every probe differentiates unless told otherwise.
DEFAULT_VARIABLES = "kernels"


def resolve_loss(model, loss):
    """The loss callable: `loss` if given, else the compiled one.

    Returns a function `(y_true, y_pred) -> per-sample losses`.
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                f"Probes need a loss. Received: model '{model.name}' is not "
                "compiled and loss=None. Fix: pass loss=... (e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) "
                "or compile the model first."
            )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            "Probes support one loss for a single-output model. Received: "
            f"loss={loss!r}. Fix: pass loss= a single keras loss."
        )
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # `Loss.call` is the public unreduced form: one value per sample.
        return loss.call
    if not callable(loss):
        raise ValueError(f"loss must be a Keras loss or callable. Received: loss={loss!r}")
    return loss


def resolve_variables(model, variables):
    """The list of model variables a probe differentiates with respect to."""
    if isinstance(variables, str):
        if variables == "trainable":
            selected = list(model.trainable_variables)
        elif variables == "kernels":
            selected = [
                layer.kernel
                for layer in model_graph.flat_layers(model)
                if isinstance(getattr(layer, "kernel", None), keras.Variable)
                and layer.kernel.trainable
            ]
        else:
            raise ValueError(
                f"variables must be one of {VARIABLE_CHOICES} or a list of the "
                f"model's variables. Received: variables={variables!r}"
            )
    else:
        selected = list(variables)
        known = {id(v) for v in model.weights}
        foreign = [getattr(v, "path", repr(v)) for v in selected if id(v) not in known]
        if foreign:
            raise ValueError(
                f"variables must belong to the model. Received variables that do not: {foreign[:5]}"
            )
    if not selected:
        raise ValueError(
            f"No variable to probe. Received: variables={variables!r} on model "
            f"'{model.name}'. Fix: make some weights trainable or pass "
            "variables='trainable'."
        )
    return selected


@contextlib.contextmanager
def preserved_state(model):
    """Restores every model variable on exit, even after an error."""
    saved = [(v, np.array(v.numpy())) for v in model.weights]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)


def _exact(fn):
    """`fn` called (so traced) inside `kq.ops.exact_derivatives()`."""

    def call(*args):
        with kq_ops.exact_derivatives():
            return fn(*args)

    return call


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


class Objective:
    """Mean loss of `model` on batches, its gradient and Hessian products.

    Holds compiled `tf.function`s, so reuse one instance (the callbacks do)
    to avoid retracing.

    Args:
        model: a built Keras model (float, quantized or robustified).
        loss: a loss name, `keras.losses.Loss` or callable, or None for the
            compiled loss.
        variables: "kernels" (default), "trainable" or a list of model
            variables (see the module docstring).
        method: "reverse" (nested tapes, reverse-over-reverse) or "forward"
            (forward-over-reverse with `tf.autodiff.ForwardAccumulator`).
    """

    METHODS = ("reverse", "forward")

    def __init__(
        self, model, loss=None, variables=DEFAULT_VARIABLES, method="forward", what="kq.probes"
    ):
        check_model(model, what)
        validation.one_of(method, "method", self.METHODS)
        self.model = model
        self.loss_fn = resolve_loss(model, loss)
        self.variables = resolve_variables(model, variables)
        self.method = method
        self._tf_vars = [v.value for v in self.variables]
        try:  # a Functional model built with `inputs=[...]` expects a list
            self._wrap_inputs = isinstance(model.input, (list, tuple))
        except (AttributeError, ValueError):
            self._wrap_inputs = False
        self.num_parameters = int(sum(np.prod(v.shape) for v in self.variables))
        # Traced (and run) inside `kq.ops.exact_derivatives()`: the quantizers'
        # default kernels are exact to first order and under nested tapes,
        # not under the ForwardAccumulator of method="forward".
        self._loss = _exact(tf.function(self._batch_loss, reduce_retracing=True))
        self._grad = _exact(tf.function(self._batch_gradient, reduce_retracing=True))
        self._hvp = _exact(tf.function(self._batch_hvp, reduce_retracing=True))

    # Per-batch pieces (mean over the batch).

    def _mean_loss(self, x, y):
        if self._wrap_inputs and not isinstance(x, (list, tuple)):
            x = [x]
        y_pred = self.model(x, training=False)
        per_sample = self.loss_fn(y, y_pred)
        return tf.reduce_mean(per_sample)

    def _batch_loss(self, x, y):
        return self._mean_loss(x, y)

    def _batch_gradient(self, x, y):
        with tf.GradientTape() as tape:
            tape.watch(self._tf_vars)  # non-trainable carriers (sharpness) too
            loss = self._mean_loss(x, y)
        grads = tape.gradient(
            loss, self._tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return loss, grads

    def _hessian_product(self, x, y, vector):
        if self.method == "forward":
            with tf.autodiff.ForwardAccumulator(self._tf_vars, vector) as acc:
                with tf.GradientTape() as tape:
                    loss = self._mean_loss(x, y)
                grads = tape.gradient(
                    loss, self._tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
            products = acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        else:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = self._mean_loss(x, y)
                grads = inner.gradient(
                    loss, self._tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
                grad_dot_v = _dot(grads, vector)
            products = outer.gradient(
                grad_dot_v, self._tf_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        return products

    def _batch_hvp(self, x, y, vector):
        return self._hessian_product(x, y, vector)

    def batch_gradient(self, x, y):
        """`(loss, gradients)` on one batch (compiled; no state saving)."""
        return self._grad(x, y)

    def batch_hvp(self, x, y, vector):
        """`H v` on one batch (compiled; no state saving)."""
        return self._hvp(x, y, vector)

    # Whole-data quantities (sample-weighted means over batches).

    def _weighted(self, batches, fn, *args):
        total, count = None, 0
        with preserved_state(self.model):
            for x, y in batches:
                n = int(tf.nest.flatten(x)[0].shape[0])
                value = fn(x, y, *args)
                value = tf.nest.map_structure(lambda t, n=n: t * float(n), value)
                total = value if total is None else tf.nest.map_structure(tf.add, total, value)
                count += n
        return tf.nest.map_structure(lambda t: t / float(count), total)

    def loss(self, batches):
        """Mean loss over `batches` (a float)."""
        return float(self._weighted(batches, self._loss))

    def gradient(self, batches):
        """`(loss, gradients)`: the mean loss and its gradient, one tensor per variable."""
        loss, grads = self._weighted(batches, self._grad)
        return float(loss), list(grads)

    def hvp(self, batches, vector):
        """`H v` on the mean loss over `batches`, one tensor per variable."""
        return list(self._weighted(batches, self._hvp, self.as_vector(vector)))

    def vhv(self, batches, vector):
        """`v^T H v` on the mean loss over `batches` (a float)."""
        vector = self.as_vector(vector)
        return float(_dot(self._weighted(batches, self._hvp, vector), vector))

    def as_vector(self, vector):
        """Checks `vector` against the variables' shapes; returns tensors of their dtypes."""
        vector = list(vector)
        if len(vector) != len(self.variables):
            raise ValueError(
                f"v must hold one tensor per probed variable ({len(self.variables)}). "
                f"Received: {len(vector)} tensors."
            )
        out = []
        for v, variable in zip(vector, self.variables):
            t = tf.cast(tf.convert_to_tensor(v), variable.dtype)
            if tuple(t.shape) != tuple(variable.shape):
                raise ValueError(
                    f"v does not match variable '{variable.path}': expected shape "
                    f"{tuple(variable.shape)}. Received: shape {tuple(t.shape)}."
                )
            out.append(t)
        return out
