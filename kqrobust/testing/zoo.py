"""The model zoo: the models users bring, with Keras' default hyperparameters.

Each `ZooModel` builds a float model and prepares the bundled digits for it
(upsampled to 32x32x3 for `keras.applications`, rows as time steps for the
Conv1D keyword-spotting network). `run_case` is the acceptance run that
`tests/zoo/` and `benchmarks/zoo.py` share: float training, `quantize_model`,
a few epochs of QAT, full-int8 TFLite in LiteRT.
"""

import dataclasses
import os
import tempfile
import time

import keras
import numpy as np

import kqrobust as kq
from kqrobust import model_graph
from kqrobust.configs import layer_table
from kqrobust.evaluate.data import top1_accuracy
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.tflite import float_ops
from kqrobust.layers import registry


def _rgb32(x, scale):
    """Digits `(N, 8, 8, 1)` in [0, 1] as `(N, 32, 32, 3)` times `scale`."""
    x = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    return np.repeat(x, 3, axis=-1) * scale


def _pixels_0_255(x):
    """8-bit pixel values, as images are, for models with include_preprocessing=True.

    Whole numbers matter: the int8 file rounds its raw input to the calibrated
    grid (step 1 on [0, 255]), exact for whole pixels, while QAT does not
    round the input ahead of the preprocessing layers. Unrounded upsampled
    digits (multiples of 255/16) lost 5 points of EfficientNetB0 agreement
    to that first rounding (86.6% against 91.6%, W8A8, one run).
    """
    return np.round(_rgb32(x, 255.0))


def _pixels_pm1(x):
    return _rgb32(x, 2.0) - 1.0  # the [-1, 1] inputs of MobileNetV2 and ResNetV2


def _time_major(x):
    """Each digit as 32 time steps of 8 features (rows repeated 4 times)."""
    return np.repeat(x[..., 0], 4, axis=1)


def _identity(x):
    return x


def kws_conv1d(num_classes=10):
    """A keyword-spotting network: Conv1D, SeparableConv1D, DepthwiseConv1D."""
    inputs = keras.Input((32, 8))
    x = keras.layers.Conv1D(32, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.SeparableConv1D(32, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.DepthwiseConv1D(3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv1D(48, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="kws_conv1d")


def separable_cnn(num_classes=10):
    """A SeparableConv2D network on 8x8x1 inputs."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.SeparableConv2D(32, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.SeparableConv2D(64, 3, padding="same", depth_multiplier=2, activation="relu")(
        x
    )
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="separable_cnn")


def encoder_decoder(num_classes=10):
    """A small encoder-decoder: Conv2DTranspose, UpSampling2D, a Concatenate skip."""
    inputs = keras.Input((8, 8, 1))
    skip = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(skip)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    up = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", use_bias=False)(x)
    up = keras.layers.ReLU()(keras.layers.BatchNormalization()(up))
    resized = keras.layers.Conv2D(16, 1, activation="relu")(keras.layers.UpSampling2D()(x))
    x = keras.layers.Concatenate()([skip, up, resized])
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="encoder_decoder")


def vit_block(num_classes=10, dim=32):
    """A small ViT: 2x2 patches, LayerNormalization, MultiHeadAttention, a GELU MLP."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Reshape((4, 2, 4, 2))(inputs)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    x = keras.layers.Reshape((16, 4))(x)
    tokens = keras.layers.Dense(dim)(x)
    y = keras.layers.LayerNormalization()(tokens)
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=dim // 2)(y, y)
    tokens = keras.layers.Add()([tokens, y])
    y = keras.layers.LayerNormalization()(tokens)
    y = keras.layers.Dense(2 * dim, activation="gelu")(y)
    y = keras.layers.Dense(dim)(y)
    tokens = keras.layers.Add()([tokens, y])
    # The head reads every token: without a class token or position embeddings, attention
    # and a token average are blind to where a patch is (61% on digits with an average).
    x = keras.layers.Flatten()(keras.layers.LayerNormalization()(tokens))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="vit_block")


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A zoo entry: a float model builder and the digits preparation it needs.

    Attributes:
        build: `() -> keras.Model` with Keras' default hyperparameters.
        prepare: `digits (N, 8, 8, 1) in [0, 1] -> model inputs`.
        float_epochs: float training epochs: enough for a stable fit on digits.
        qat_epochs: QAT epochs.
        from_logits: whether the model outputs logits (keras.applications
            end with a softmax).
        qat_learning_rate: Adam's QAT learning rate.
    """

    build: object
    prepare: object
    float_epochs: int
    qat_epochs: int
    from_logits: bool = True
    qat_learning_rate: float = 1e-4


def _application(name, **kwargs):
    def build():
        return getattr(keras.applications, name)(
            input_shape=(32, 32, 3), weights=None, classes=10, **kwargs
        )

    return build


ZOO = {
    # MobileNetV2 and EfficientNetB0 at W4A8 need more QAT than 3 epochs at 1e-4 to come back
    # within 3 points of float (MobileNetV2: 79.4 against 88.6 after 3; 87.5 against 88.9 after 8
    # at 3e-4, one run).
    "mobilenet_v2": ZooModel(
        _application("MobileNetV2", alpha=0.35), _pixels_pm1, 20, 8, False, 3e-4
    ),
    "mobilenet_v3_small": ZooModel(_application("MobileNetV3Small"), _pixels_0_255, 20, 3, False),
    "efficientnet_b0": ZooModel(_application("EfficientNetB0"), _pixels_0_255, 12, 8, False, 3e-4),
    "resnet50_v2": ZooModel(_application("ResNet50V2"), _pixels_pm1, 8, 2, False),
    "kws_conv1d": ZooModel(kws_conv1d, _time_major, 15, 3),
    "separable_cnn": ZooModel(separable_cnn, _identity, 15, 3),
    "encoder_decoder": ZooModel(encoder_decoder, _identity, 15, 3),
    "vit_block": ZooModel(vit_block, _identity, 20, 3),
}


def _compile(model, learning_rate, from_logits):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )


def kernel_layers(model):
    """The layers of `model` that own a kernel (registered or not)."""
    return [
        layer
        for layer in model_graph.flat_layers(model)
        if registry.layer_type_of(layer) is not None or layer_table.is_unsupported_weighted(layer)
    ]


def _latency_ratio(int8_path, float_path, x, rounds=5):
    """Median int8 over float LiteRT invoke time, the two run round-robin."""
    runners = {"int8": TFLiteRunner(int8_path), "float": TFLiteRunner(float_path)}
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.predict(x)
            times[name].append(time.perf_counter() - start)
    return float(np.median(times["int8"]) / np.median(times["float"]))


def _agreement(outputs, other):
    return float(np.mean(np.argmax(outputs, -1) == np.argmax(other, -1)))


def train_float(name, digits, epochs=None, learning_rate=1e-3, seed=0):
    """The zoo model `name` trained on digits (`epochs`, default its
    `float_epochs`); BatchNorm re-estimated at the end."""
    entry = ZOO[name]
    epochs = entry.float_epochs if epochs is None else epochs
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(seed)
    model = entry.build()
    x = entry.prepare(x_train)
    _compile(model, learning_rate, entry.from_logits)
    model.fit(
        x,
        y_train,
        batch_size=64,
        epochs=epochs,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x)],
    )
    return model


def run_case(
    name,
    float_model,
    digits,
    weight_bits,
    qat_epochs=None,
    learning_rate=None,
    export_samples=None,
    latency=False,
    out_dir=None,
):
    """The acceptance run of one zoo model at `weight_bits` (activations 8-bit).

    Args:
        name: a key of `ZOO`.
        float_model: the trained float model (`train_float`).
        digits: `load_digits()`.
        weight_bits: the QAT weight bit-width (first and last layers at 8).
        qat_epochs: QAT epochs (None: the entry's `qat_epochs`).
        learning_rate: Adam's QAT learning rate (None: the entry's).
        export_samples: test samples run in LiteRT (None: all).
        latency: also measure the LiteRT latency of int8 against the float file.
        out_dir: where the `.tflite` files go (a temporary directory if None).

    Returns:
        A dict: float, QAT and LiteRT test accuracy, argmax agreement of
        LiteRT with the Keras QAT model, argmax agreement of LiteRT's
        default (XNNPACK) kernels with its builtin kernels on the same file
        (`kernel_agreement`: how far the runtime agrees with itself), kernel
        layers and how many are quantized, the float ops left in the int8
        file, int8 size over the float file's size, and (with `latency`)
        int8 over float latency.
    """
    entry = ZOO[name]
    qat_epochs = entry.qat_epochs if qat_epochs is None else qat_epochs
    learning_rate = entry.qat_learning_rate if learning_rate is None else learning_rate
    (x_train, y_train), (x_test, y_test) = digits
    x_train, x_test = entry.prepare(x_train), entry.prepare(x_test)
    if export_samples is not None:
        x_test, y_test = x_test[:export_samples], y_test[:export_samples]
    keras.utils.set_random_seed(0)
    qmodel = kq.quantize_model(
        float_model,
        "lsq",
        weight_bits=weight_bits,
        activation_bits=8,
        calibration_data=x_train[:512],
    )
    _compile(qmodel, learning_rate, entry.from_logits)
    qmodel.fit(x_train, y_train, batch_size=64, epochs=qat_epochs, verbose=0)
    qat_outputs = qmodel.predict(x_test, verbose=0)
    rows = qmodel.quantization_summary()
    kernels = [row for row in rows if row.owns_kernel]
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = out_dir or tmp
        int8_path = os.path.join(out_dir, f"{name}_w{weight_bits}a8.tflite")
        float_path = os.path.join(out_dir, f"{name}_float.tflite")
        flatbuffer = kq.export.to_tflite(qmodel, x_train[:200], int8_path)
        kq.export.to_tflite(float_model, None, float_path, io_dtype="float32", quantize=False)
        lite_outputs = TFLiteRunner(int8_path).predict(x_test)
        builtin_outputs = TFLiteRunner(int8_path, kernels="builtin").predict(x_test)
        result = {
            "model": name,
            "weight_bits": weight_bits,
            "float_accuracy": top1_accuracy(float_model.predict(x_test, verbose=0), y_test),
            "qat_accuracy": top1_accuracy(qat_outputs, y_test),
            "litert_accuracy": top1_accuracy(lite_outputs, y_test),
            "agreement": _agreement(lite_outputs, qat_outputs),
            "kernel_agreement": _agreement(lite_outputs, builtin_outputs),
            "kernel_layers": len(kernels),
            "quantized_layers": sum(row.weight_bits is not None for row in kernels),
            "float_layers": [row.name for row in kernels if row.weight_bits is None],
            "float_ops": sorted({op for op, _ in float_ops(flatbuffer)}),
            "size_ratio": os.path.getsize(int8_path) / os.path.getsize(float_path),
        }
        if latency:
            result["latency_ratio"] = _latency_ratio(int8_path, float_path, x_test[:32])
    return result
