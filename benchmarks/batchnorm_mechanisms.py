"""BatchNorm under LSQ QAT: four mechanisms side by side, in one process.

    python benchmarks/batchnorm_mechanisms.py [--models digits_cnn,mobilenet_v2]
        [--qat_epochs 5] [--mobilenet_qat_epochs 3] [--repeats 9] [--out_json runs/bn.json]

From the same trained float model, LSQ QAT (Adam 1e-3, batch 64) runs once
per candidate:
  - none: `qmodel.batchnorm_samples = 0`, the moving averages as training left them;
  - re-estimation: the default `QuantModel.fit`, which re-estimates the statistics
    at the end of training (Nagel et al., "Overcoming Oscillations in
    Quantization-Aware Training", ICML 2022, sec. 4.1);
  - freeze: BatchNorm statistics frozen after `--freeze_fraction` of the epochs
    (Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018, sec. 3.2; Krishnamoorthi,
    "Quantizing deep convolutional networks for efficient inference: A
    whitepaper", arXiv 1806.08342, 2018, sec. 3.2): every BatchNormalization
    gets `trainable = False` (inference mode; gamma and beta freeze too) and
    the model is re-compiled with the same optimizer;
  - fold: Conv+BatchNorm pairs replaced by `FoldedConvBatchNorm` below, a
    prototype of BatchNorm folding with batch-statistics correction
    (Krishnamoorthi 2018, sec. 3.2, fig. 9-10; Jacob et al. 2018, sec. 3.2),
    frozen after the same delay.
Optional (`--candidates ...,freeze-reestimated`): freeze, with the statistics
re-estimated (`kq.recalibrate_batchnorm`) at the freeze point.
For each: accuracy in `predict`, then in training mode
(`model(x_test, training=True)`, which updates BatchNorm statistics, hence
after predict). Then the train-step time of each candidate against plain LSQ
(round-robin, order rotated every round, median of the per-round ratios) and
the cost of one re-estimation against one QAT epoch.

Models: `kq.testing.small_cnn` on digits (8x8x1) at W4A4 with BatchNorm
momentum 0.99 and 0.999, and `keras.applications.MobileNetV2(alpha=0.35)` on
digits resized to 32x32x3 at W4A8 with its own momentum (0.999). The
defaults take about 15 minutes on 2 shared CPU cores; results and reading:
docs/results/batchnorm.md.
"""

import argparse
import collections
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust import model_graph  # noqa: E402
from kqrobust.evaluate.data import top1_accuracy  # noqa: E402

import common  # noqa: E402

CANDIDATES = ("none", "re-estimation", "freeze", "fold")
# Not run by default: freeze after re-estimating the statistics at the freeze point.
EXTRA_CANDIDATES = ("freeze-reestimated",)
STARTED = time.perf_counter()


def log(message):
    """A progress line on stderr, with the seconds since the start."""
    import sys

    print(f"[{time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


CONV_LAYERS = (kq.layers.QuantConv2D, kq.layers.QuantDepthwiseConv2D)


# --- BatchNorm folding with correction: a prototype for this benchmark ------


class FoldedConvBatchNorm(keras.layers.Layer):
    """A quantized conv and the BatchNorm after it, computed as one folded conv.

    Krishnamoorthi, arXiv 1806.08342, 2018, sec. 3.2, fig. 9-10 (after Jacob
    et al., CVPR 2018, sec. 3.2), with `sigma = sqrt(moving_var + eps)`:
      - the kernel is folded with the moving statistics,
        `W_fold = W * gamma / sigma`, and LSQ-quantized (the conv's own
        per-channel kernel quantizer, re-initialised on `W_fold`);
      - training, before the freeze: a float conv of the same (quantized)
        input gives the batch moments `mu_B`, `sigma_B^2`, which update the
        moving statistics; the output is
        `conv(x, Q(W_fold)) * sigma / sigma_B + beta - gamma * mu_B / sigma_B`,
        so that without quantization it equals BatchNorm in training mode;
      - after the freeze (`frozen = True`, then re-compile) and in inference:
        `conv(x, Q(W_fold)) + beta - gamma * mu / sigma` with the moving
        statistics: no float conv, and training computes what inference does.

    The variables are the conv's and the BatchNorm's own (shared, not copied).
    Only for convs without bias or activation, channels-last.
    """

    def __init__(self, conv, batchnorm, **kwargs):
        super().__init__(name=f"{conv.name}_folded", **kwargs)
        self.conv = conv
        self.batchnorm = batchnorm
        self.frozen = False
        conv.kernel_quantizer.initialize(self.folded_kernel(), conv.kernel_quantizer_weights)

    def _per_channel(self, values):
        """Reshapes per-output-channel values to multiply the kernel."""
        if isinstance(self.conv, keras.layers.DepthwiseConv2D):
            return keras.ops.reshape(values, tuple(self.conv.kernel.shape[-2:]))
        return values

    def _gamma_beta(self):
        bn = self.batchnorm
        gamma = bn.gamma if bn.scale else keras.ops.ones_like(bn.moving_mean)
        beta = bn.beta if bn.center else keras.ops.zeros_like(bn.moving_mean)
        return gamma, beta

    def folded_kernel(self):
        gamma, _ = self._gamma_beta()
        sigma = keras.ops.sqrt(self.batchnorm.moving_variance + self.batchnorm.epsilon)
        return self.conv.transformed_kernel() * self._per_channel(gamma / sigma)

    def call(self, inputs, training=None):
        conv, bn = self.conv, self.batchnorm
        training = bool(training)
        x = conv.quantize_input(inputs, training=training)
        gamma, beta = self._gamma_beta()
        sigma = keras.ops.sqrt(bn.moving_variance + bn.epsilon)
        kernel = conv.kernel_quantizer(
            self.folded_kernel(), conv.kernel_quantizer_weights, training=training
        )
        outputs = conv.linear_op(x, kernel)
        if training and not self.frozen:
            mean, variance = keras.ops.moments(
                conv.linear_op(x, conv.transformed_kernel()), axes=[0, 1, 2]
            )
            sigma_batch = keras.ops.sqrt(variance + bn.epsilon)
            outputs = outputs * (sigma / sigma_batch) + (beta - gamma * mean / sigma_batch)
            momentum = bn.momentum
            bn.moving_mean.assign(
                bn.moving_mean * momentum + keras.ops.stop_gradient(mean) * (1.0 - momentum)
            )
            bn.moving_variance.assign(
                bn.moving_variance * momentum + keras.ops.stop_gradient(variance) * (1.0 - momentum)
            )
            return outputs
        return outputs + (beta - gamma * bn.moving_mean / sigma)


def _foldable_pairs(model, layer_configs):
    """`{batchnorm name: conv layer}` for every conv whose only consumer is a BatchNorm."""
    consumers = collections.Counter(
        name
        for config in layer_configs
        for name in model_graph.inbound_layer_names(config["inbound_nodes"])
    )
    pairs = {}
    for config in layer_configs:
        if config["class_name"] != "BatchNormalization" or len(config["inbound_nodes"]) != 1:
            continue
        feeds = model_graph.inbound_layer_names(config["inbound_nodes"])
        if len(feeds) != 1:
            continue
        conv = model.get_layer(feeds[0])
        bn = model.get_layer(config["name"])
        if (
            isinstance(conv, CONV_LAYERS)
            and consumers[conv.name] == 1
            and not conv.use_bias
            and conv.activation in (None, keras.activations.linear)
            and bn.axis in (-1, 3, [-1], [3])
        ):
            pairs[config["name"]] = conv
    return pairs


def fold_batchnorm(qmodel):
    """A Functional model sharing `qmodel`'s layers, Conv+BatchNorm pairs folded.

    Walks `qmodel.get_config()` (the public description of the graph) and
    calls the same layer objects on new tensors; each conv feeding only a
    BatchNorm is replaced, with that BatchNorm, by one `FoldedConvBatchNorm`.
    Returns `(model, folded_layers)`.
    """
    config = qmodel.get_config()
    layer_configs = config["layers"]
    pairs = _foldable_pairs(qmodel, layer_configs)
    folded_convs = {conv.name for conv in pairs.values()}
    tensors, pending, folded = {}, {}, []

    def resolve(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                name, node, index = obj["config"]["keras_history"]
                return keras.tree.flatten(tensors[name][node])[index]
            return {key: resolve(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [resolve(value) for value in obj]
        return obj

    for layer_config in layer_configs:
        name = layer_config["name"]
        if layer_config["class_name"] == "InputLayer":
            tensors[name] = [
                keras.Input(batch_shape=layer_config["config"]["batch_shape"], name=name)
            ]
            continue
        tensors[name] = []
        for node in layer_config["inbound_nodes"]:
            args, kwargs = resolve(node["args"]), resolve(node.get("kwargs", {}))
            if name in folded_convs:
                pending[name] = args
                tensors[name].append(None)
            elif name in pairs:
                layer = FoldedConvBatchNorm(pairs[name], qmodel.get_layer(name))
                folded.append(layer)
                tensors[name].append(layer(*pending[pairs[name].name]))
            else:
                tensors[name].append(qmodel.get_layer(name)(*args, **kwargs))

    def endpoints(spec):
        if spec and isinstance(spec[0], str):
            spec = [spec]
        return [keras.tree.flatten(tensors[n][node])[i] for n, node, i in spec]

    inputs = endpoints(config["input_layers"])
    outputs = endpoints(config["output_layers"])
    model = keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=f"{qmodel.name}_folded",
    )
    return model, folded


# --- Models and data ----------------------------------------------------------


def digits_32x32():
    """Digits resized to 32x32 and repeated to 3 channels (MobileNetV2's input)."""
    (x_train, y_train), (x_test, y_test) = kq.datasets.load_digits()

    def resize(x):
        x = tf.image.resize(x, (32, 32), method="bilinear").numpy()
        return np.repeat(x, 3, axis=-1).astype("float32")

    return (resize(x_train), y_train), (resize(x_test), y_test)


def setups(args):
    """The (model, momentum) settings to run, each a dict."""
    runs = []
    if "digits_cnn" in args.models:
        for momentum in args.momenta:
            runs.append(
                dict(
                    label=f"digits small_cnn, W4A4, BatchNorm momentum {momentum}",
                    build=lambda: kq.testing.small_cnn(seed=args.seed),
                    momentum=momentum,
                    data=kq.datasets.load_digits,
                    weight_bits=4,
                    activation_bits=4,
                    from_logits=True,
                    float_epochs=args.float_epochs,
                    qat_epochs=args.qat_epochs,
                    timing_steps=args.timing_steps,
                )
            )
    if "mobilenet_v2" in args.models:
        runs.append(
            dict(
                label="digits 32x32x3 MobileNetV2 (alpha 0.35), W4A8, BatchNorm momentum 0.999 "
                "(keras.applications' own)",
                build=lambda: keras.applications.MobileNetV2(
                    alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10
                ),
                momentum=None,
                data=digits_32x32,
                weight_bits=4,
                activation_bits=8,
                from_logits=False,
                float_epochs=args.mobilenet_float_epochs,
                qat_epochs=args.mobilenet_qat_epochs,
                timing_steps=args.mobilenet_timing_steps,
            )
        )
    return runs


def batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def compile_model(model, optimizer, from_logits):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )


def predict_accuracy(model, x, y):
    return 100.0 * top1_accuracy(model.predict(x, batch_size=256, verbose=0), y)


def accuracies(model, x, y):
    """`(predict accuracy, training-mode accuracy)` in %; training mode last."""
    in_predict = predict_accuracy(model, x, y)
    training_mode = keras.ops.convert_to_numpy(model(x, training=True))
    return in_predict, 100.0 * top1_accuracy(training_mode, y)


# --- The candidates -----------------------------------------------------------


def quantized(float_model, setup, x_train):
    return kq.quantize_model(
        float_model,
        recipe="lsq",
        weight_bits=setup["weight_bits"],
        activation_bits=setup["activation_bits"],
        calibration_data=x_train,
    )


def freeze_batchnorm(model, optimizer, from_logits):
    """Inference-mode BatchNorm for the rest of training (then re-compiles)."""
    for layer in batchnorms(model):
        layer.trainable = False
    compile_model(model, optimizer, from_logits)


def freeze_folded(model, folded, optimizer, from_logits):
    for layer in folded:
        layer.frozen = True
    compile_model(model, optimizer, from_logits)


def run_candidate(name, float_model, setup, data, args, models):
    """Trains one candidate from `float_model`; returns its numbers.

    The trained model goes to `models[name]`.
    """
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    qmodel = quantized(float_model, setup, x_train)
    log(f"  {name}: quantized model built")
    epochs = setup["qat_epochs"]
    freeze_epoch = min(epochs - 1, max(1, int(epochs * args.freeze_fraction)))
    optimizer = keras.optimizers.Adam(1e-3)
    model, folded = qmodel, []
    if name == "fold":
        model, folded = fold_batchnorm(qmodel)
    if name != "re-estimation":
        qmodel.batchnorm_samples = 0
    compile_model(model, optimizer, setup["from_logits"])
    fit = dict(x=x_train, y=y_train, batch_size=64, verbose=0)
    start = time.perf_counter()
    if name in ("freeze", "fold", "freeze-reestimated"):
        model.fit(epochs=freeze_epoch, **fit)
        log(f"  {name}: {freeze_epoch} epochs before the freeze")
        if name == "freeze-reestimated":
            kq.recalibrate_batchnorm(model, x_train)
        if name.startswith("freeze"):
            freeze_batchnorm(model, optimizer, setup["from_logits"])
        else:
            freeze_folded(model, folded, optimizer, setup["from_logits"])
        history = model.fit(initial_epoch=freeze_epoch, epochs=epochs, **fit)
    else:
        history = model.fit(epochs=epochs, **fit)
    seconds = time.perf_counter() - start
    log(f"  {name}: trained in {seconds:.0f} s")
    models[name] = model
    in_predict, training_mode = accuracies(model, x_test, y_test)
    result = dict(
        candidate=name,
        predict=in_predict,
        training_mode=training_mode,
        fit_accuracy=100.0 * history.history["accuracy"][-1],
        fit_seconds=seconds,
    )
    if name in ("freeze", "fold", "freeze-reestimated"):
        result["freeze_epoch"] = freeze_epoch
    if name == "fold":
        result["folded_pairs"] = len(folded)
    return result


# --- Timing -------------------------------------------------------------------


def step_ratios(trained, float_model, setup, data, args):
    """Per candidate: ms per train step and the median per-round ratio to plain LSQ.

    `trained`: `{candidate: model}` as QAT left them (compiled, their train
    step traced; after "freeze" and "fold" that is the frozen step). The
    "re-estimation" model has the plain LSQ step (re-estimation leaves the
    step as it is), so its ratio is an A/A check of the timing noise. The
    folded step before the freeze is timed on a new folded model.
    """
    (x_train, y_train), _ = data
    models = {"lsq (= none)": trained["none"]}
    if "re-estimation" in trained:
        models["re-estimation (same step: A/A)"] = trained["re-estimation"]
    if "freeze" in trained:
        models["freeze (after the delay)"] = trained["freeze"]
    if "fold" in trained:
        keras.utils.set_random_seed(args.seed)
        models["fold (before the freeze)"], _ = fold_batchnorm(
            quantized(float_model, setup, x_train)
        )
        compile_model(
            models["fold (before the freeze)"], keras.optimizers.Adam(1e-3), setup["from_logits"]
        )
        models["fold (after the freeze)"] = trained["fold"]
    steps = {}
    for name, model in models.items():

        def step(x, y, model=model):
            for _ in range(setup["timing_steps"]):
                model.train_on_batch(x, y)

        steps[name] = step
    x, y = x_train[:64], y_train[:64]
    times = common.rotated_round_times(steps, x, y, repeats=args.repeats)
    base = times["lsq (= none)"]
    rows = []
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base)]
        rows.append(
            dict(
                name=name,
                ms_per_step=1000 * statistics.median(ts) / setup["timing_steps"],
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
            )
        )
    return rows


def recalibration_cost(qmodel, setup, data, args):
    """Median seconds of one QAT epoch and of one `kq.recalibrate_batchnorm`, interleaved."""
    (x_train, y_train), _ = data
    qmodel.batchnorm_samples = 0  # its train step is traced already
    forward = tf.function(lambda x: qmodel(x, training=True), reduce_retracing=True)
    batches = [x_train[i : i + 32] for i in range(0, min(len(x_train), 2048), 32)]
    for batch in batches:
        forward(batch)  # traces the forward passes
    epoch, recalibration, forwards = [], [], []
    for _ in range(args.recalibration_repeats):
        start = time.perf_counter()
        qmodel.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
        epoch.append(time.perf_counter() - start)
        start = time.perf_counter()
        kq.recalibrate_batchnorm(qmodel, x_train)
        recalibration.append(time.perf_counter() - start)
        start = time.perf_counter()
        for batch in batches:
            forward(batch)
        forwards.append(time.perf_counter() - start)
    epoch_s = statistics.median(epoch)
    recal_s = statistics.median(recalibration)
    return dict(
        epoch_seconds=epoch_s,
        recalibration_seconds=recal_s,
        fraction_of_epoch=recal_s / epoch_s,
        forwards_seconds=statistics.median(forwards),
        samples=min(len(x_train), 2048),
        train_samples=len(x_train),
    )


# --- Main -----------------------------------------------------------------------


def train_float(setup, data, args):
    (x_train, y_train), (x_test, y_test) = data
    model = setup["build"]()
    if setup["momentum"] is not None:
        for layer in batchnorms(model):
            layer.momentum = setup["momentum"]
    momenta = sorted({layer.momentum for layer in batchnorms(model)})
    keras.utils.set_random_seed(args.seed)
    compile_model(model, keras.optimizers.Adam(1e-3), setup["from_logits"])
    model.fit(x_train, y_train, batch_size=64, epochs=setup["float_epochs"], verbose=0)
    info = dict(float_predict_as_trained=predict_accuracy(model, x_test, y_test), momenta=momenta)
    if args.recalibrate_float:
        kq.recalibrate_batchnorm(model, x_train)
        info["float_predict_recalibrated"] = predict_accuracy(model, x_test, y_test)
    return model, info


def print_setup(result):
    info = result["float"]
    print(f"\n## {result['label']}")
    print(
        f"float: {result['float_epochs']} epochs, predict {info['float_predict_as_trained']:.1f}% "
        f"as trained"
        + (
            f", {info['float_predict_recalibrated']:.1f}% after re-estimating its "
            "BatchNorm statistics (the QAT start)"
            if "float_predict_recalibrated" in info
            else ""
        )
        + f"; BatchNorm momenta {info['momenta']}"
    )
    print(f"QAT: LSQ, {result['qat_epochs']} epochs, Adam 1e-3, batch 64")
    print("| candidate | fit accuracy (last epoch) % | training mode % | predict % | fit s |")
    print("|---|---|---|---|---|")
    for row in result["candidates"]:
        note = ""
        if "freeze_epoch" in row:
            note = f" (frozen after epoch {row['freeze_epoch']})"
        if "folded_pairs" in row:
            note += f", {row['folded_pairs']} pairs folded"
        print(
            f"| {row['candidate']}{note} | {row['fit_accuracy']:.1f} | "
            f"{row['training_mode']:.1f} | {row['predict']:.1f} | {row['fit_seconds']:.1f} |"
        )
    if result.get("steps"):
        print(
            f"train step, batch 64, {result['timing_steps']} steps per timing, "
            f"{result['repeats']} rotated rounds:"
        )
        print("| candidate | ms / step | ratio to lsq (median) | min-max over rounds |")
        print("|---|---|---|---|")
        for row in result["steps"]:
            print(
                f"| {row['name']} | {row['ms_per_step']:.1f} | {row['ratio']:.3f} | "
                f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f} |"
            )
    cost = result.get("recalibration")
    if cost:
        print(
            f"re-estimation: {cost['recalibration_seconds']:.2f} s for {cost['samples']} samples "
            f"(one QAT epoch of {cost['train_samples']} samples: {cost['epoch_seconds']:.2f} s; "
            f"ratio {cost['fraction_of_epoch']:.2f} of an epoch). The same training-mode "
            f"forwards in an already-traced tf.function: {cost['forwards_seconds']:.2f} s."
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default="digits_cnn,mobilenet_v2",
        help="comma-separated: digits_cnn, mobilenet_v2",
    )
    parser.add_argument(
        "--momenta", default="0.99,0.999", help="BatchNorm momenta of the digits CNN"
    )
    parser.add_argument("--float_epochs", type=int, default=20)
    parser.add_argument("--qat_epochs", type=int, default=5)
    parser.add_argument("--mobilenet_float_epochs", type=int, default=15)
    parser.add_argument("--mobilenet_qat_epochs", type=int, default=3)
    parser.add_argument(
        "--freeze_fraction",
        type=float,
        default=0.5,
        help="freeze/fold: BatchNorm statistics freeze after this share of epochs",
    )
    parser.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help=f"comma-separated, from {list(CANDIDATES + EXTRA_CANDIDATES)}",
    )
    parser.add_argument(
        "--no_recalibrate_float",
        dest="recalibrate_float",
        action="store_false",
        help="start QAT from the float statistics as trained",
    )
    parser.add_argument("--repeats", type=int, default=9, help="rotated timing rounds")
    parser.add_argument(
        "--timing_steps", type=int, default=10, help="digits CNN: train steps per timing"
    )
    parser.add_argument("--mobilenet_timing_steps", type=int, default=2)
    parser.add_argument("--recalibration_repeats", type=int, default=3)
    parser.add_argument("--skip_timing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_json", default=None)
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.momenta = [float(m) for m in args.momenta.split(",")]
    candidates = args.candidates.split(",")
    unknown = sorted(set(candidates) - set(CANDIDATES + EXTRA_CANDIDATES))
    if unknown:
        parser.error(
            f"unknown candidates {unknown}; choose from {list(CANDIDATES + EXTRA_CANDIDATES)}"
        )
    if "none" not in candidates and not args.skip_timing:
        parser.error(
            "timing compares with plain LSQ: keep 'none' in --candidates or pass --skip_timing"
        )

    print(
        f"machine: {common.machine_description()}, load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    results = []
    for setup in setups(args):
        start = time.perf_counter()
        data = setup["data"]()
        float_model, info = train_float(setup, data, args)
        result = dict(
            label=setup["label"],
            float=info,
            float_epochs=setup["float_epochs"],
            qat_epochs=setup["qat_epochs"],
            timing_steps=setup["timing_steps"],
            repeats=args.repeats,
            candidates=[],
        )
        log(f"{setup['label']}: float model trained, {info}")
        trained = {}
        for name in candidates:
            log(f"QAT: {name}")
            result["candidates"].append(
                run_candidate(name, float_model, setup, data, args, trained)
            )
        if not args.skip_timing:
            log("timing the train steps")
            result["steps"] = step_ratios(trained, float_model, setup, data, args)
            log("timing the re-estimation")
            result["recalibration"] = recalibration_cost(trained["none"], setup, data, args)
        del trained
        result["seconds"] = time.perf_counter() - start
        results.append(result)
        print_setup(result)
        print(
            f"({result['seconds']:.0f} s, load average "
            f"{' '.join(f'{v:.1f}' for v in os.getloadavg())})",
            flush=True,
        )
    if args.out_json:
        os.makedirs(os.path.dirname(args.out_json) or ".", exist_ok=True)
        with open(args.out_json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
