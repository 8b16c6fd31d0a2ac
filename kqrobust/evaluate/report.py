"""`robustness_report`: every evaluation for several models, as Markdown, JSON and PNG."""

import json
import os

import keras
import numpy as np

from kqrobust.atomic import atomic_write_text
from kqrobust.evaluate import plots
from kqrobust.evaluate.bitwidth import TRAINED
from kqrobust.evaluate.bitwidth import bit_configs
from kqrobust.evaluate.bitwidth import bitwidth_sweep
from kqrobust.evaluate.bitwidth import resolve_activation_bits
from kqrobust.evaluate.bitwidth import trained_bits
from kqrobust.evaluate.data import DEFAULT_CALIBRATION_SIZE
from kqrobust.evaluate.data import as_arrays
from kqrobust.evaluate.data import default_calibration
from kqrobust.evaluate.error_propagation import error_propagation
from kqrobust.evaluate.level_sensitivity import level_sensitivity
from kqrobust.evaluate.output_variance import output_variance
from kqrobust.evaluate.requantize import requantize
from kqrobust.evaluate.requantize import resolve_method
from kqrobust.evaluate.step_size import DEFAULT_FACTORS
from kqrobust.evaluate.step_size import step_size_sweep
from kqrobust.evaluate.weight_stats import weight_statistics
from kqrobust.ops.lsq import quant_levels
from kqrobust.ptq.float_view import float_view

PLOTS = {
    "accuracy_vs_bits.png": ("bitwidth", plots.plot_bitwidth),
    "step_size.png": ("step_size", plots.plot_step_size),
    "kl_per_layer.png": ("error_propagation", plots.plot_kl),
    "level_sensitivity.png": ("level_sensitivity", plots.plot_level_sensitivity),
    "weight_histograms.png": ("weights", plots.plot_weight_histograms),
}


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value):
    return f"{100 * value:.2f}"


def _activations(result, name):
    """What the activations of model `name` are in the quantized evaluations."""
    bits = result["models"][name]["activation_bits"]
    if bits is None:
        return "float"
    if result["setup"]["activation_bits"] == TRAINED:
        return f"{bits} bits, its trained quantizers"
    return f"{bits} bits"


def _bitwidth_section(result):
    names = list(result["models"])
    rows = result["bitwidth"]
    lines = [
        "## Accuracy (%) against bit-width, no fine-tuning (weight/activation bits)",
        "FP: no quantizer (the model's effective float weights, float activations). "
        "Other columns: the weights re-quantized at that bit-width without fine-tuning "
        "(method per model above), the activations as labelled.",
    ]
    trained = [
        f"{n} was trained at W{m['trained_bits'][0]}"
        + ("" if m["trained_bits"][1] is None else f"A{m['trained_bits'][1]}")
        for n, m in result["models"].items()
        if m["trained_bits"] is not None
    ]
    if trained and result["setup"]["activation_bits"] == TRAINED:
        lines.append(
            "; ".join(trained) + ". At its own weight bit-width its steps are kept "
            "unchanged: that column is the model as trained."
        )
    labels = [[r["label"] for r in rows[n]] for n in names]
    if all(row == labels[0] for row in labels):
        table = _table(
            ["model"] + labels[0], [[n] + [_pct(r["accuracy"]) for r in rows[n]] for n in names]
        )
    else:  # activations differ per model: one column per weight bit-width
        first = rows[names[0]]
        table = _table(
            ["model", "activations"]
            + ["FP" if r["weight_bits"] is None else f"W{r['weight_bits']}" for r in first],
            [[n, _activations(result, n)] + [_pct(r["accuracy"]) for r in rows[n]] for n in names],
        )
    return "\n\n".join(lines + [table])


def _header(result):
    names = list(result["models"])
    setup = result["setup"]
    return "\n\n".join(
        [
            "# Robustness report",
            f"Models: {', '.join(names)}. Evaluation samples: {setup['num_samples']}. "
            f"Calibration: {setup['calibration']}. First and last layers at "
            f"{setup['first_last_bits']} bits. Quantization method per model: "
            + ", ".join(f"{n}: {result['models'][n]['method']}" for n in names)
            + ".",
        ]
    )


def _activations_line(result):
    return (
        "Activations: "
        + "; ".join(f"{n}: {_activations(result, n)}" for n in result["models"])
        + "."
    )


def _step_size_section(result):
    names = list(result["models"])
    rows = result["step_size"]
    return "\n\n".join(
        [
            f"## Step-size robustness at W{result['setup']['analysis_bits']}: accuracy (%) with "
            "s = k s'",
            _activations_line(result),
            _table(
                ["model"] + [f"k={r['factor']:g}" for r in rows[names[0]]],
                [[n] + [_pct(r["accuracy"]) for r in rows[n]] for n in names],
            ),
        ]
    )


def _error_propagation_section(result):
    names = list(result["models"])
    rows = result["error_propagation"]
    return "\n\n".join(
        [
            f"## Error propagation at W{result['setup']['analysis_bits']}: KL(float || quantized) "
            "per layer",
            "float: the model with no quantizer. " + _activations_line(result),
            _table(
                ["layer"] + names,
                [
                    [row["layer"]] + [f"{rows[n][i]['kl']:.4g}" for n in names]
                    for i, row in enumerate(rows[names[0]])
                ],
            ),
        ]
    )


def _level_sensitivity_section(result):
    names = list(result["models"])
    rows = result["level_sensitivity"]
    return "\n\n".join(
        [
            f"## Single-level sensitivity at W{result['setup']['analysis_bits']}: accuracy (%) "
            "when only the weights on one level are quantized (float activations)",
            _table(
                ["model", "float"] + [str(r["level"]) for r in rows[names[0]]["levels"]],
                [
                    [n, _pct(rows[n]["float_accuracy"])]
                    + [_pct(r["accuracy"]) for r in rows[n]["levels"]]
                    for n in names
                ],
            ),
        ]
    )


def _output_variance_section(result):
    names = list(result["models"])
    rows = result["output_variance"]
    bits = result["setup"]["analysis_bits"]
    return "\n\n".join(
        [
            f"## Output variance (float model, and quantized at W{bits})",
            _activations_line(result),
            _table(
                ["model", "float output variance", "quantized output variance"],
                [
                    [
                        n,
                        f"{rows[n]['float']['output']:.4g}",
                        f"{rows[n]['quantized']['output']:.4g}",
                    ]
                    for n in names
                ],
            ),
        ]
    )


def _weights_section(result):
    names = list(result["models"])
    layers = {n: result["weights"][n]["layers"].values() for n in names}
    return "\n\n".join(
        [
            "## Weights: symmetry and saturation (mean over layers)",
            "symmetry = L_sym1 / mean|w| (0: symmetric); kurtosis: 1.8 uniform, 3 Gaussian, "
            "6 Laplace; clipped = share of weights beyond the ACIQ-Laplace 4-bit clip; "
            "max/std = mean over channels of max|w| / std.",
            _table(
                ["model", "symmetry", "kurtosis", "clipped", "max/std"],
                [
                    [n]
                    + [
                        f"{np.mean([s[k] for s in layers[n]]):.4g}"
                        for k in ("symmetry", "kurtosis", "clipped_fraction", "max_over_std")
                    ]
                    for n in names
                ],
            ),
        ]
    )


def _plots_section():
    return "\n\n".join(["## Plots", "\n".join(f"![{file}]({file})" for file in PLOTS)])


SECTIONS = (
    _header,
    _bitwidth_section,
    _step_size_section,
    _error_propagation_section,
    _level_sensitivity_section,
    _output_variance_section,
    _weights_section,
)


def _markdown(result):
    """`report.md`: one section per analysis, in the order of `SECTIONS`, then the plots."""
    return "\n\n".join([section(result) for section in SECTIONS] + [_plots_section()]) + "\n"


def robustness_report(
    models,
    data,
    out_dir,
    calibration_data=None,
    weight_bits=(8, 6, 5, 4, 3, 2),
    activation_bits=TRAINED,
    method="auto",
    step_factors=DEFAULT_FACTORS,
    analysis_bits=4,
    first_last_bits=8,
    batch_size=256,
    verbose=1,
):
    """Runs every robustness evaluation on each model and writes a report.

    For each model: the bit-width sweep (`bitwidth_sweep`), the step-size
    sweep at `analysis_bits` (`step_size_sweep`), the per-layer KL divergence
    (`error_propagation`), the single-level sensitivity
    (`level_sensitivity`), the output variance of the float and quantized
    models (`output_variance`) and the weight statistics
    (`weight_statistics`).

    Activations: by default (`activation_bits="trained"`) a QAT model keeps
    its own activation quantizers (bit-width and trained steps) in every
    quantized evaluation but the single-level one, and a float model runs
    float activations; the report states which per model. The "FP" column
    is always the model with no quantizer at all: for a QAT model, its
    weights run without the activation quantizers it was trained with,
    which can score far below the model as trained.

    Writes into `out_dir` (each file atomically): `report.md`, `report.json`
    (every number) and the PNG plots `accuracy_vs_bits.png`,
    `step_size.png`, `kl_per_layer.png`, `level_sensitivity.png`,
    `weight_histograms.png`.

    Args:
        models: `{name: model}` (e.g. `{"baseline": m1, "robust": m2}`), or
            one model.
        data: `(x, y)` evaluation data.
        out_dir: output directory (created).
        calibration_data: calibration inputs; default: the first 256
            evaluation inputs (the report says so).
        weight_bits, activation_bits: the sweep's configurations
            (`bitwidth_sweep`); `activation_bits` None, an int or a paired
            list applies to every model, and also sets the activations of
            the step-size, KL and output-variance analyses (an int or
            "trained"; float for None or a list).
        method: "auto", "rescale" or a `kq.ptq` method, for every model.
        step_factors: the `k` of the step-size sweep.
        analysis_bits: weight bit-width of the step-size, KL, level and
            variance analyses.
        first_last_bits: bit-width of the first and last layers.
        batch_size: evaluation batch size.
        verbose: 1 shows a `keras.utils.Progbar` over all evaluations.

    Returns:
        The dict written to `report.json`.

    Example: `robustness_report({"baseline": m1, "robust": m2}, (x_test,
    y_test), "runs/report")`, run in docs/ptq_evaluation.md ("Report").
    """
    models = _named_models(models)
    x, y = as_arrays(data)
    calibration = default_calibration(calibration_data, x)
    configs = bit_configs(weight_bits, None if activation_bits == TRAINED else activation_bits)
    levels = sum(quant_levels(analysis_bits)) + 1  # the weight grid's levels
    progbar = keras.utils.Progbar(
        len(models) * (1 + len(configs) + len(step_factors) + levels),
        verbose=verbose,
        unit_name="evaluation",
    )
    settings = {
        "weight_bits": weight_bits,
        "activation_bits": activation_bits,
        "method": method,
        "step_factors": step_factors,
        "analysis_bits": analysis_bits,
        "calibration": calibration,
        "first_last_bits": first_last_bits,
        "batch_size": batch_size,
        "progbar": progbar,
    }
    result = {
        "setup": _setup(
            x,
            calibration,
            calibration_data is not None,
            weight_bits,
            activation_bits,
            analysis_bits,
            first_last_bits,
            step_factors,
        ),
        "models": {},
        "bitwidth": {},
        "step_size": {},
        "error_propagation": {},
        "level_sensitivity": {},
        "output_variance": {},
        "weights": {},
    }
    for name, model in models.items():
        for key, value in _evaluate_model(model, x, y, **settings).items():
            result[key][name] = value
    _write_report(result, out_dir)
    return result


def _named_models(models):
    """`{name: model}` from a dict or one model; a ValueError for none."""
    if not isinstance(models, dict):
        models = {getattr(models, "name", "model"): models}
    if not models:
        raise ValueError("models must name at least one model. Received: {}")
    return models


def _setup(
    x,
    calibration,
    calibration_given,
    weight_bits,
    activation_bits,
    analysis_bits,
    first_last_bits,
    step_factors,
):
    """The report's `setup` entry: what was evaluated, and how."""
    return {
        "num_samples": int(len(x)),
        "calibration": (
            f"{len(calibration)} given samples"
            if calibration_given
            else f"the first {min(len(x), DEFAULT_CALIBRATION_SIZE)} evaluation inputs"
        ),
        "weight_bits": list(weight_bits),
        "activation_bits": activation_bits,
        "analysis_bits": analysis_bits,
        "first_last_bits": first_last_bits,
        "step_factors": [float(k) for k in step_factors],
    }


def _evaluate_model(
    model,
    x,
    y,
    weight_bits,
    activation_bits,
    method,
    step_factors,
    analysis_bits,
    calibration,
    first_last_bits,
    batch_size,
    progbar,
):
    """Every analysis of one model: `{result key: that model's entry}`."""
    common = {
        "calibration_data": calibration,
        "first_last_bits": first_last_bits,
        "batch_size": batch_size,
    }
    model_method = resolve_method(model, method)
    sweep_bits = resolve_activation_bits(model, activation_bits)
    # The single-configuration analyses: an int or "trained", else float.
    analysis_activations = sweep_bits if isinstance(sweep_bits, int) else None
    entry = {
        "models": {
            "method": model_method,
            "params": int(model.count_params()),
            "activation_bits": analysis_activations,
            "trained_bits": (
                None
                if trained_bits(model, "kernel") is None
                else [trained_bits(model, "kernel"), trained_bits(model, "input")]
            ),
        }
    }
    entry["bitwidth"] = bitwidth_sweep(
        model, (x, y), weight_bits, sweep_bits, model_method, progbar=progbar, **common
    )
    entry["step_size"] = step_size_sweep(
        model,
        (x, y),
        step_factors,
        analysis_bits,
        analysis_activations,
        model_method,
        progbar=progbar,
        **common,
    )
    entry["level_sensitivity"] = level_sensitivity(
        model, (x, y), analysis_bits, model_method, progbar=progbar, **common
    )
    quantized = requantize(
        model, analysis_bits, analysis_activations, model_method, calibration, first_last_bits
    )
    entry["error_propagation"] = error_propagation(
        model, x, quantized_model=quantized, batch_size=batch_size
    )
    entry["output_variance"] = output_variance(
        {"float": float_view(model), "quantized": quantized}, x, batch_size=batch_size
    )
    entry["weights"] = weight_statistics(model)
    return entry


def _write_report(result, out_dir):
    """`report.json`, `report.md` and the plots, each written atomically."""
    atomic_write_text(os.path.join(out_dir, "report.json"), json.dumps(result, indent=1))
    atomic_write_text(os.path.join(out_dir, "report.md"), _markdown(result))
    for file, (key, plot) in PLOTS.items():
        plot(result[key], os.path.join(out_dir, file))
