"""FPQ's channel-wise standardization distillation (CSD), as a recipe technique.

The pure loss (`standardize_channels`, `csd_loss`) and `CSDTechnique`, the
loss term `kq.training.QuantModel`'s step adds from the frozen teacher.

Formulas: docs/methods.md#csd.
"""

import keras
import tensorflow as tf
from keras import ops

from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import check_nonnegative
from kqrobust.techniques.base import register_technique
from kqrobust.techniques.sfp import FPQ_WEIGHT_DECAY


def standardize_channels(z, epsilon=1e-5):
    """`(z - mu_c) / sqrt(var_c + epsilon)`, statistics over all but the last axis."""
    z = ops.cast(z, "float32")
    axes = tuple(range(len(z.shape) - 1))
    mean = ops.mean(z, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(z - mean), axis=axes, keepdims=True)
    return (z - mean) / ops.sqrt(variance + epsilon)


def _fused_standardize_channels(z, epsilon):
    """`standardize_channels` as one fused TensorFlow kernel (forward and gradient).

    `FusedBatchNormV3` in training mode with scale 1 and offset 0 computes
    `(z - mu_c) / sqrt(var_c + epsilon)` with the biased batch variance over
    all but the last axis, i.e. `standardize_channels`; its registered
    gradient is the exact one (the batch statistics' dependence on `z`
    included) and has a registered gradient of its own, so nested tapes and
    forward-over-reverse work. Any rank: the kernel takes 4-D input, so
    other ranks are viewed as `(elements_per_channel, 1, 1, channels)`.
    The raw op is called, not `tf.compat.v1.nn.fused_batch_norm`, because
    that wrapper raises `epsilon` to at least 1.001e-5.
    """
    z = tf.cast(z, "float32")
    shape = tf.shape(z)
    channels = z.shape[-1]
    flat = z if z.shape.rank == 4 else tf.reshape(z, (-1, 1, 1, channels))
    empty = tf.zeros((0,), "float32")
    standardized = tf.raw_ops.FusedBatchNormV3(
        x=flat,
        scale=tf.ones((channels,), "float32"),
        offset=tf.zeros((channels,), "float32"),
        mean=empty,
        variance=empty,
        epsilon=epsilon,
        data_format="NHWC",
        is_training=True,
    )[0]
    return standardized if z.shape.rank == 4 else tf.reshape(standardized, shape)


def _fusable(z):
    return (
        keras.backend.backend() == "tensorflow"
        and z.shape.rank is not None
        and z.shape.rank >= 2
        and z.shape[-1] is not None
    )


def csd_loss(student_features, teacher_features, epsilon=1e-5):
    """`sum_layers sum_channels mean_(batch, space) (z~_t - z~_s)^2`.

    Each feature map is standardised per channel (last axis) over the batch
    and spatial axes; the squared difference is averaged over each channel's
    elements (a normalisation the paper's sum allows) and summed over
    channels and layers. The teacher side has its gradient stopped.

    On the TensorFlow backend each standardisation is one fused
    `FusedBatchNormV3` kernel (scale 1, offset 0, training mode), forward
    and backward, instead of `standardize_channels`' element-wise passes and
    their autodiff: the same function and gradient, 4x cheaper on ResNet-20's
    features (benchmarks/README.md, FPQ). The values agree with
    `standardize_channels` to float32 rounding (about 1e-6 relative on the
    loss, 1e-5 on its gradient, both as close to a float64 reference as the
    element-wise form is).

    Under a `tf.distribute` strategy, `QuantModel.train_step` calls this on
    each replica: the channel statistics `mu_c`, `var_c` are those of the
    replica's share of the batch (as non-synchronised BatchNorm's are), so
    the loss the optimizer sees is the mean over replicas of per-replica
    CSD, not the CSD of the global batch. Each statistic still covers
    `batch_per_replica * H * W` elements; with one replica both coincide.

    Args:
        student_features: the student's conv outputs, a list.
        teacher_features: the teacher's matching conv outputs, same order.
        epsilon: the variance offset.

    Returns:
        A float32 scalar.

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv 2503.11159,
        "Channel-wise Standardization Distillation".
    """
    total = 0.0
    for z_s, z_t in zip(student_features, teacher_features):
        z_s = ops.convert_to_tensor(z_s)
        z_t = ops.stop_gradient(ops.convert_to_tensor(z_t))
        if _fusable(z_s) and _fusable(z_t):
            diff = _fused_standardize_channels(z_t, epsilon) - _fused_standardize_channels(
                z_s, epsilon
            )
        else:
            diff = standardize_channels(z_t, epsilon) - standardize_channels(z_s, epsilon)
        axes = tuple(range(len(diff.shape) - 1))
        total = total + ops.sum(ops.mean(ops.square(diff), axis=axes))
    return total


def csd_layer_names(model, weight=None):
    """The quantized conv layers of `model` CSD matches with its teacher, by name.

    Every quantized layer of kind "conv" or "depthwise" (`kq.layers.registry`)
    of the model's own graph whose name is a layer of the same Keras type in
    `model.teacher`, with the same output shape. Raises a ValueError naming
    the layers that cannot be matched (`weight`: the CSD weight, for the
    message).
    """
    teacher = model.teacher
    if teacher is None:
        recipe = getattr(model.recipe, "name", None)
        raise ValueError(
            f"Recipe '{recipe}' distils (csd_weight={weight}) from the frozen float "
            f"teacher, but model '{model.name}' has none (the teacher is not saved with "
            "the model). Fix: call qmodel.set_teacher(float_model) before fit."
        )
    convs = [
        layer
        for layer in registry.layers_of_kind(model.layers, "conv", "depthwise")
        if isinstance(layer, QuantizeMixin)
    ]
    names = [layer.name for layer in convs]
    if not names:
        raise ValueError(
            f"CSD needs quantized conv layers in the top-level graph of '{model.name}', "
            "found none (layers inside nested models are not matched). Fix: "
            "flatten the model, or set csd_weight=None."
        )
    teacher_layers = {layer.name: layer for layer in teacher.layers}
    bad = [
        layer.name
        for layer in convs
        if type(teacher_layers.get(layer.name)) is not registry.layer_type_of(layer).keras_class
        or tuple(teacher_layers[layer.name].output.shape) != tuple(layer.output.shape)
    ]
    if bad:
        raise ValueError(
            f"CSD matches student and teacher conv layers by name; these student "
            f"layers have no teacher conv layer of the same name and output shape: "
            f"{bad}. Teacher conv layers: "
            f"{[l.name for l in registry.layers_of_kind(teacher.layers, 'conv', 'depthwise')]}. "
            "Fix: set_teacher() the float model this one was quantized from."
        )
    return names


@register_technique
class CSDTechnique(Technique):
    """Distillation from the frozen float teacher: `weight * csd_loss` joins the loss.

    Each step runs the teacher (`model.teacher`, the float model
    `kq.quantize_model` started from) once in inference mode; the outputs of
    every quantized conv layer (`csd_layer_names`) of the student and of the
    teacher's layer of the same name give `csd_loss`, logged as `csd_loss`
    (`task_loss` is the rest). Recipe keyword: `csd_weight`.

    Args:
        weight: the loss weight, a float >= 0 (the paper's sum: 1.0).

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv 2503.11159,
        "Channel-wise Standardization Distillation".
    """

    name = "csd"
    order = 60
    fields = {"csd_weight": None}
    loss_name = "csd_loss"
    paper_weight_decay = FPQ_WEIGHT_DECAY

    def __init__(self, weight=1.0):
        self.weight = check_nonnegative(weight, "weight", allow_none=False)

    @classmethod
    def from_fields(cls, csd_weight=None):
        weight = check_nonnegative(csd_weight, "csd_weight")
        return None if weight is None else cls(weight)

    def to_fields(self):
        return {"csd_weight": self.weight}

    def feature_layers(self, model):
        cache = model.technique_cache(self.name)
        if "names" not in cache:
            cache["names"] = csd_layer_names(model, self.weight)
        return cache["names"]

    def teacher_features_model(self, model):
        """The teacher's outputs of `feature_layers(model)` (built once per model)."""
        cache = model.technique_cache(self.name)
        if "teacher" not in cache:
            names = self.feature_layers(model)
            cache["teacher"] = keras.Model(
                model.teacher.input, [model.teacher.get_layer(n).output for n in names]
            )
        return cache["teacher"]

    def prepare(self, model, x, y, sample_weight):
        return self.teacher_features_model(model)(x, training=False)

    def loss(self, model, step):
        return self.weight * csd_loss(step.features, step.prepared)

    def get_config(self):
        return {"weight": self.weight}
