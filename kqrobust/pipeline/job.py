"""The main job: float training, QAT with a recipe, evaluation, export, reports.

`examples/train_cifar.py`, the `kqrobust train` command and `make demo` all
run `run_job(JobConfig(...))`.
"""

import dataclasses
import importlib.util
import json
import os
import textwrap
import time

import keras
from absl import logging

from kqrobust import models as model_zoo
from kqrobust import validation
from kqrobust.atomic import atomic_write_text
from kqrobust.callbacks import BackupAndRestore
from kqrobust.callbacks import BatchNormRecalibration
from kqrobust.callbacks import GradientNormLogger
from kqrobust.callbacks import HessianTraceLogger
from kqrobust.callbacks import TerminateOnNaN
from kqrobust.configs.recipe import get_recipe
from kqrobust.distribute import get_strategy
from kqrobust.evaluate.report import robustness_report
from kqrobust.io_utils import print_msg
from kqrobust.models.small_cnn import small_cnn
from kqrobust.pipeline.data import load_job_data
from kqrobust.pipeline.optim import default_weight_decay
from kqrobust.pipeline.optim import paper_optimizer
from kqrobust.quantize import quantize_model
from kqrobust.quantizers.base import check_bits
from kqrobust.saving import load_model
from kqrobust.saving import save_model

# What the optional stages import, and the extra that installs it.
EXTRAS = {"export": ("ai_edge_litert", "export"), "report": ("matplotlib", "plots")}

MODELS = {
    "small_cnn": lambda shape, classes: small_cnn(shape, classes, width=32),
    "resnet20": lambda shape, classes: model_zoo.resnet20(shape, classes),
    "resnet18": lambda shape, classes: model_zoo.resnet18(shape, classes),
    "mobilenet_v2": lambda shape, classes: model_zoo.mobilenet_v2(shape, classes),
}


class TrainingDivergedError(RuntimeError):
    """A phase of the job diverged (NaN/Inf loss or variables); the job stops."""


def _setting(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass
class JobConfig:
    """Every setting of the main job; the flags of train_cifar.py and `kqrobust train`.

    The defaults are the offline digits demo; `examples/train_cifar.py` sets
    the papers' CIFAR defaults (Esser et al., ICLR 2020, sec. 3; Pang & Cai,
    arXiv:2503.11159, 2025; docs/methods.md#lsq).
    """

    dataset: str = _setting("digits", "digits (bundled, offline), cifar10 or cifar100")
    model: str = _setting("small_cnn", "small_cnn, resnet20, resnet18 or mobilenet_v2")
    recipe: str = _setting("lsq", "QAT recipe preset (see kq.configs.PRESETS)")
    weight_bits: int = _setting(4, "weight bit-width, 2..8 (first/last layers: 8)")
    activation_bits: int = _setting(4, "activation bit-width, 2..8 (first/last layers: 8)")
    float_epochs: int = _setting(30, "epochs of float training (ignored with float_checkpoint)")
    qat_epochs: int = _setting(8, "epochs of quantization-aware training")
    batch_size: int = _setting(64, "batch size per replica (global = this x replicas)")
    learning_rate: float = _setting(
        0.05, "float-training learning rate at a global batch of 128 (scaled linearly)"
    )
    qat_learning_rate: float = _setting(
        0.01, "QAT learning rate at a global batch of 128 (scaled linearly); papers: 0.01"
    )
    optimizer: str = _setting("sgd", "sgd (momentum 0.9, the papers') or adam; cosine schedule")
    weight_decay: float = _setting(
        None, "QAT weight decay; default: the paper's for the recipe and bits"
    )
    float_checkpoint: str = _setting(None, "a float .keras model to start from")
    data_dir: str = _setting(None, "directory of prepared TFDS data")
    download: bool = _setting(False, "allow downloading the dataset when missing")
    strategy: str = _setting("auto", "auto, default, mirrored, tpu or multiworker")
    tpu: str = _setting(None, "TPU name or address (strategy tpu/auto)")
    out_dir: str = _setting("runs/job", "where models, reports and backups go")
    export: bool = _setting(True, "export int8 TFLite and ONNX and verify them")
    report: bool = _setting(True, "write the robustness report (sweeps, plots)")
    tensorboard: bool = _setting(False, "write TensorBoard logs")
    probe_every: int = _setting(0, "epochs between Hessian-trace / grad-norm logs (0: off)")
    backup_every: int = _setting(50, "steps between fault-tolerance backups")
    steps_per_epoch: int = _setting(None, "cap on steps per epoch (smoke tests)")
    seed: int = _setting(0, "random seed")


def _compile(model, config, learning_rate, epochs, steps, weight_decay):
    model.compile(
        optimizer=paper_optimizer(learning_rate, epochs, steps, weight_decay, config.optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _callbacks(config, phase, data):
    """Fault tolerance, the NaN guard, probe curves, then TensorBoard.

    The probe loggers come before TensorBoard so that it writes their
    `hessian_trace` / `grad_norm` values too.
    """
    callbacks = [
        BackupAndRestore(
            os.path.join(config.out_dir, "backup", phase), save_freq=config.backup_every
        ),
        TerminateOnNaN(),
    ]
    if config.probe_every:
        probe_data = (data.calibration[:256], data.calibration_labels[:256])
        callbacks += [
            GradientNormLogger(probe_data, every_n_epochs=config.probe_every),
            HessianTraceLogger(probe_data, every_n_epochs=config.probe_every, max_probes=10),
        ]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(config.out_dir, "logs", phase)))
    return callbacks


def _diverged(phase, guard):
    return TrainingDivergedError(
        f"The {phase} phase diverged: {guard.message}. The job stops here rather than quantize "
        "or export a broken model. Fix: lower the learning rate (or check the data), then run "
        "the job again."
    )


def _fit(model, phase, callbacks, **kwargs):
    """`model.fit`, raising `TrainingDivergedError` when the NaN guard stopped it."""
    guard = next(c for c in callbacks if isinstance(c, TerminateOnNaN))
    try:
        # The job's tf.data pipelines shuffle themselves (pipeline/data.py); Keras ignores
        # `shuffle` for a dataset and warns when it is left at its default, True.
        history = model.fit(callbacks=callbacks, shuffle=False, **kwargs)
    except ValueError as error:  # e.g. re-estimating BatchNorm from NaN weights
        if guard.message is None:
            raise
        raise _diverged(phase, guard) from error
    if guard.message is not None:
        raise _diverged(phase, guard)
    return history


def finished_float_model(config, strategy):
    """`out_dir/float.keras` of an interrupted run, or None; a corrupt one is moved aside."""
    path = os.path.join(config.out_dir, "float.keras")
    if not os.path.exists(path):
        return None
    try:
        with strategy.scope():
            model = load_model(path)
    except ValueError as error:
        os.replace(path, path + ".corrupt")
        logging.error("%s; moved aside to %s.corrupt, the float phase runs again.", error, path)
        return None
    print_msg(
        f"[kqrobust] reusing the finished float model {path} (delete it to train the float "
        "phase again)"
    )
    return model


def train_float(config, data, strategy):
    """Loads `config.float_checkpoint`, or trains the float model."""
    if config.float_checkpoint:
        with strategy.scope():
            return load_model(config.float_checkpoint)
    validation.known(config.model, "model", sorted(MODELS))
    steps = config.steps_per_epoch or data.steps_per_epoch
    lr = config.learning_rate * config.batch_size * strategy.num_replicas_in_sync / 128
    with strategy.scope():
        model = MODELS[config.model](tuple(data.input_shape), data.num_classes)
        _compile(model, config, lr, config.float_epochs, steps, config.weight_decay or 5e-4)
    # A plain Keras model: its BatchNorm statistics are re-estimated by the callback (QAT models
    # do it in fit), so the logged validation accuracy and the saved model are those of its weights.
    callbacks = [BatchNormRecalibration(data.train)] + _callbacks(config, "float", data)
    print_msg(f"[kqrobust] float phase: {config.float_epochs} epochs")
    _fit(
        model,
        "float",
        callbacks,
        x=data.train,
        epochs=config.float_epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=data.test,
        verbose=2,
    )
    return model


def train_qat(config, data, strategy, float_model, extra_callbacks=()):
    """`quantize_model` with the recipe, then QAT with the papers' schedule."""
    steps = config.steps_per_epoch or data.steps_per_epoch
    weight_decay = config.weight_decay
    if weight_decay is None:
        weight_decay = default_weight_decay(config.recipe, config.weight_bits)
    lr = config.qat_learning_rate * config.batch_size * strategy.num_replicas_in_sync / 128
    with strategy.scope():
        qmodel = quantize_model(
            float_model,
            recipe=config.recipe,
            weight_bits=config.weight_bits,
            activation_bits=config.activation_bits,
        )
        _compile(qmodel, config, lr, config.qat_epochs, steps, weight_decay)
    print_msg(f"[kqrobust] QAT phase: {config.qat_epochs} epochs")
    _fit(
        qmodel,
        "QAT",
        _callbacks(config, "qat", data) + list(extra_callbacks),
        x=data.train,
        epochs=config.qat_epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=data.test,
        verbose=2,
    )
    return qmodel


def write_report(config, data, float_model, qmodel):
    """The robustness report of the float and the QAT model; returns its sweep."""
    print_msg("[kqrobust] robustness report (bit-width and step-size sweeps, KL, plots)")
    report = robustness_report(
        {"float": float_model, config.recipe: qmodel},
        data.test_arrays,
        os.path.join(config.out_dir, "report"),
        calibration_data=data.calibration,
        verbose=1,
    )
    return {
        name: {row["label"]: row["accuracy"] for row in rows}
        for name, rows in report["bitwidth"].items()
    }


def export_and_verify(config, data, qmodel):
    """Full-int8 TFLite and ONNX, each verified in its runtime, and the Edge TPU check.

    Writes `model_int8.tflite`, `model.onnx`, `verification.md` and
    `edgetpu.md` into `out_dir`; returns the numbers for the summary.
    """
    from kqrobust import export  # needs the `export` extra

    x_test, y_test = data.test_arrays
    paths = {
        "tflite": os.path.join(config.out_dir, "model_int8.tflite"),
        "onnx": os.path.join(config.out_dir, "model.onnx"),
    }
    print_msg("[kqrobust] export: full-int8 TFLite and ONNX, verified in LiteRT and onnxruntime")
    export.to_tflite(qmodel, data.calibration, paths["tflite"], io_dtype="int8")
    export.to_onnx(qmodel, paths["onnx"])
    # The exports run activations at 8 bits (integer kernels); their Keras
    # references are the export graphs (8-bit ranges; for TFLite every tensor).
    references = {
        "tflite": export.export_model(qmodel, data.calibration),
        "onnx": export.export_model(qmodel),
    }
    results = {
        kind: export.verify(path, references[kind], x_test, labels=y_test, print_report=False)
        for kind, path in paths.items()
    }
    edgetpu = export.check_edgetpu(paths["tflite"])
    atomic_write_text(
        os.path.join(config.out_dir, "verification.md"),
        "\n\n".join(f"## {kind}: {paths[kind]}\n\n{result}" for kind, result in results.items())
        + "\n",
    )
    atomic_write_text(os.path.join(config.out_dir, "edgetpu.md"), f"{edgetpu}\n")
    return {kind: dataclasses.asdict(result) for kind, result in results.items()} | {
        "edgetpu_compatible": bool(edgetpu.compatible)
    }


RUNTIMES = {"tflite": ("TFLite", "LiteRT"), "onnx": ("ONNX", "onnxruntime")}


def format_summary(summary):
    """A short, human-readable table of what the job produced.

    Each export gets two rows: its Keras reference, the export graph
    (`kq.export.export_model`: BatchNorm folded, kernels on their grids,
    8-bit activation ranges; for TFLite every tensor, with ranges from the
    calibration data), and the runtime's own accuracy with the share of test
    inputs on which its prediction equals that reference's. Below 8 bits a
    note says that the exports run the activations at 8 bits.
    """
    rows = [
        ("float model", summary["float_accuracy"], ""),
        (f"QAT ({summary['recipe']}, W{summary['bits']}) in Keras", summary["qat_accuracy"], ""),
    ]
    for kind in ("tflite", "onnx"):
        if kind in summary.get("export", {}):
            result = summary["export"][kind]
            name, runtime = RUNTIMES[kind]
            rows.append(
                (f"{name} export graph in Keras (8-bit activations)", result["keras_accuracy"], "")
            )
            rows.append(
                (
                    f"{kind} int8 in {runtime}",
                    result["runtime_accuracy"],
                    f"{100 * result['agreement']:.1f}% of inputs",
                )
            )
    lines = ["| model | test accuracy | same prediction as its export graph |", "|---|---|---|"]
    lines += [f"| {name} | {100 * acc:.2f}% | {agreement} |" for name, acc, agreement in rows]
    activation_bits = summary.get("config", {}).get("activation_bits")
    if "export" in summary and activation_bits is not None and activation_bits < 8:
        lines.append(
            "\n"
            + textwrap.fill(
                f"The exports run activations at 8 bits, not the {activation_bits} bits of QAT "
                f"(integer TFLite and ONNX kernels have no {activation_bits}-bit activations): "
                f"each trained clip range is split into 255 steps instead of "
                f"{2**activation_bits - 1}. The weights keep their QAT codes (embedded in int8). "
                "Agreement is measured against each export's Keras export graph, with those 8-bit "
                "activation ranges, not against the QAT model.",
                width=110,
            )
        )
    if "export" in summary:
        lines.append(
            f"\nEdge TPU static check: "
            f"{'compatible' if summary['export']['edgetpu_compatible'] else 'see edgetpu.md'}"
        )
    lines.append(f"\nDone in {summary['seconds']:.0f} s; everything is in {summary['out_dir']}/")
    return "\n".join(lines)


def check_config(config):
    """Fails before any training on settings that would fail later."""
    get_recipe(config.recipe)  # an unknown preset lists the known ones
    check_bits(config.weight_bits, "weight_bits")
    check_bits(config.activation_bits, "activation_bits")
    if not config.float_checkpoint:
        validation.known(config.model, "model", sorted(MODELS))
    for name in ("learning_rate", "qat_learning_rate"):
        validation.positive(
            getattr(config, name),
            name,
            fix=f"use the default ({JobConfig.__dataclass_fields__[name].default}).",
        )
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "tensorboard=True needs the tensorboard package, which is not installed. "
            "Fix: pip install 'kqrobust[tensorboard]', or set tensorboard=False."
        )
    for name in ("export", "report"):
        if getattr(config, name) and importlib.util.find_spec(EXTRAS[name][0]) is None:
            raise ValueError(
                f"{name}=True needs the '{EXTRAS[name][1]}' extra ({EXTRAS[name][0]} is not "
                f"installed). Fix: pip install 'kqrobust[{EXTRAS[name][1]}]', or turn the "
                f"stage off ({name}=False)."
            )


def run_job(config):
    """Runs the whole job; returns the summary dict (also written to out_dir).

    Every artifact is written atomically. A run interrupted in a phase
    resumes it from its last backup (a corrupt backup is moved aside); once
    `float.keras` exists, a new run reuses it instead of training the float
    phase again. A diverged phase raises `TrainingDivergedError`.
    """
    check_config(config)
    start = time.time()
    os.makedirs(config.out_dir, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy, tpu=config.tpu)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    data = load_job_data(
        config.dataset, global_batch, config.data_dir, config.download, seed=config.seed
    )
    print_msg(
        f"[kqrobust] {config.dataset}: {config.model}, recipe {config.recipe} "
        f"W{config.weight_bits}A{config.activation_bits}, {strategy.num_replicas_in_sync} "
        f"replica(s), global batch {global_batch}"
    )
    float_model = None if config.float_checkpoint else finished_float_model(config, strategy)
    if float_model is None:
        float_model = train_float(config, data, strategy)
        save_model(float_model, os.path.join(config.out_dir, "float.keras"))
    qmodel = train_qat(config, data, strategy, float_model)
    save_model(qmodel, os.path.join(config.out_dir, "qat.keras"))
    x_test, y_test = data.test_arrays
    summary = {
        "config": dataclasses.asdict(config),
        "recipe": config.recipe,
        "bits": f"{config.weight_bits}A{config.activation_bits}",
        "out_dir": config.out_dir,
        "float_accuracy": float(
            float_model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        ),
        "qat_accuracy": float(
            qmodel.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        ),
    }
    if config.export:
        summary["export"] = export_and_verify(config, data, qmodel)
    if config.report:
        summary["bitwidth_sweep"] = write_report(config, data, float_model, qmodel)
    summary["seconds"] = round(time.time() - start, 1)
    atomic_write_text(os.path.join(config.out_dir, "summary.json"), json.dumps(summary, indent=2))
    print_msg("\n" + format_summary(summary))
    return summary
