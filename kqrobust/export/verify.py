"""`verify`: run the exported model in its runtime and compare with Keras."""

import dataclasses

import numpy as np

from kqrobust.export.runtime import runner_for
from kqrobust.io_utils import print_msg


@dataclasses.dataclass
class VerificationResult:
    """How an exported model agrees with its Keras model on real data.

    Attributes:
        runtime: "litert" or "onnxruntime".
        num_samples: samples compared.
        agreement: fraction of samples whose argmax agrees.
        keras_accuracy: accuracy of the Keras model (None without labels).
        runtime_accuracy: accuracy of the exported model (None without labels).
        max_abs_diff_lsb: max |runtime - keras| output difference, in LSBs.
        mean_abs_diff_lsb: mean |runtime - keras| output difference, in LSBs.
        lsb: the output step the differences are counted in: the int8 output
            scale, or for a float output the Keras output range / 255.
    """

    runtime: str
    num_samples: int
    agreement: float
    keras_accuracy: float
    runtime_accuracy: float
    max_abs_diff_lsb: float
    mean_abs_diff_lsb: float
    lsb: float

    def table(self):
        """The result as a two-column text table."""
        rows = [
            ("runtime", self.runtime),
            ("samples", self.num_samples),
            ("argmax agreement", f"{100 * self.agreement:.2f}%"),
        ]
        if self.keras_accuracy is not None:
            rows += [
                ("keras accuracy", f"{100 * self.keras_accuracy:.2f}%"),
                (f"{self.runtime} accuracy", f"{100 * self.runtime_accuracy:.2f}%"),
            ]
        rows += [
            ("max |diff| (LSB)", f"{self.max_abs_diff_lsb:.2f}"),
            ("mean |diff| (LSB)", f"{self.mean_abs_diff_lsb:.3f}"),
            ("LSB", f"{self.lsb:.6g}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def __str__(self):
        return self.table()


def verify(path, model, data, labels=None, num_threads=1, print_report=True):
    """Runs `path` in LiteRT or onnxruntime and compares it with `model`.

    Args:
        path: a `.tflite` or `.onnx` file (or TFLite bytes).
        model: the Keras model it was exported from (for models with
            sub-8-bit activations, `kq.export.export_model(model)` is the
            8-bit-activation reference the export reproduces).
        data: float input samples `(N, ...)`.
        labels: optional integer labels `(N,)` for the accuracies.
        num_threads: runtime threads.
        print_report: print the table.

    Returns:
        A `VerificationResult`.

    Example: `verify("model.tflite", qmodel, x_test, labels=y_test).agreement`,
    run in docs/export.md.
    """
    data = np.asarray(data, np.float32)
    if len(data) == 0:
        raise ValueError("data is empty. Received: 0 samples. Fix: pass input samples.")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(data):
            raise ValueError(
                f"labels must have one entry per sample. Received: {len(labels)} labels "
                f"for {len(data)} samples."
            )
    runner = runner_for(path, num_threads)
    expected = np.asarray(model.predict(data, verbose=0, batch_size=256), np.float32)
    actual = runner.predict(data).reshape(expected.shape)
    lsb = runner.output_scale
    if lsb is None:
        lsb = float(expected.max() - expected.min()) / 255 or 1.0
    diff = np.abs(actual - expected) / lsb
    flat_expected = expected.reshape(len(data), -1)
    flat_actual = actual.reshape(len(data), -1)
    keras_pred, runtime_pred = flat_expected.argmax(-1), flat_actual.argmax(-1)
    result = VerificationResult(
        runtime=runner.runtime,
        num_samples=len(data),
        agreement=float(np.mean(keras_pred == runtime_pred)),
        keras_accuracy=None if labels is None else float(np.mean(keras_pred == labels)),
        runtime_accuracy=None if labels is None else float(np.mean(runtime_pred == labels)),
        max_abs_diff_lsb=float(diff.max()),
        mean_abs_diff_lsb=float(diff.mean()),
        lsb=float(lsb),
    )
    if print_report:
        print_msg(result.table())
    return result
