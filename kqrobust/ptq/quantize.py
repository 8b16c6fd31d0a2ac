"""`kq.ptq.quantize`: post-training quantization of any float model."""

import dataclasses

from kqrobust import validation
from kqrobust.configs.recipe import Recipe
from kqrobust.layers import rewrites
from kqrobust.ptq.bias_correction import correct_biases
from kqrobust.ptq.calibrate import calibrate_ranges
from kqrobust.ptq.calibration import calibration_array
from kqrobust.ptq.float_view import float_view
from kqrobust.ptq.reconstruction import Reconstruction
from kqrobust.ptq.reconstruction import reconstruct
from kqrobust.quantize import quantize_model
from kqrobust.quantizers.base import check_bits
from kqrobust.recalibration import initialize_activation_steps


@dataclasses.dataclass(frozen=True)
class PTQMethod:
    """One PTQ method: its range rule and whether it reconstructs.

    `range_rule` None means "the reconstruction's `init_method`".
    """

    range_rule: str = None
    reconstruct: bool = False
    drop: bool = False
    description: str = ""


METHODS = {
    "minmax": PTQMethod("minmax", description="observed min and max"),
    "aciq_laplace": PTQMethod("aciq_laplace", description="ACIQ, Laplace prior"),
    "aciq_gauss": PTQMethod("aciq_gauss", description="ACIQ, Gaussian prior"),
    "mse": PTQMethod("mse", description="MSE-optimal clipping by search"),
    "adaquant": PTQMethod(reconstruct=True, description="AdaQuant reconstruction"),
    "qdrop": PTQMethod(
        reconstruct=True, drop=True, description="AdaQuant reconstruction with QDrop"
    ),
}
ALIASES = {"aciq": "aciq_laplace"}


def get_method(name):
    """The canonical method name for `name` (aliases: "aciq")."""
    key = ALIASES.get(name, name)
    if key not in METHODS:
        raise ValueError(
            f"Unknown PTQ method: {name!r}. Methods: {sorted(METHODS)} (aliases: {ALIASES})."
        )
    return key


def recipe_for(method, weight_bits, activation_bits, first_last_bits=8):
    """The `Recipe` of a PTQ model: fixed-range quantizers, steps set later."""
    return Recipe(
        name=f"ptq_{method}",
        weight_quantizer="fixed_range",
        activation_quantizer=None if activation_bits is None else "fixed_range",
        weight_bits=weight_bits,
        activation_bits=8 if activation_bits is None else activation_bits,
        first_last_bits=first_last_bits,
        description=f"Post-training quantization: {METHODS[method].description}.",
    )


def quantize(
    model,
    calibration_data,
    method="minmax",
    weight_bits=4,
    activation_bits=8,
    bias_correction=False,
    layer_overrides=None,
    first_last_bits=8,
    reconstruction=None,
    batch_size=128,
    seed=0,
):
    """Post-training quantization of a float (or robustified, or QAT) model.

    Steps:
      1. `float_view(model)`: plain Keras layers with the effective float
         weights (SatNL folded in, fake quantization dropped).
      2. `kq.quantize_model` with a `ptq_<method>` recipe of `FixedRange`
         quantizers (per-channel weights on LSQ's signed grid, `[-127, 127]`
         at 8 bits and the full `[-2^(b-1), 2^(b-1) - 1]` below, per-tensor
         inputs, unsigned after ReLU), first and last layers at
         `first_last_bits`.
      3. Steps from the method's range rule: kernels per channel, inputs on
         the float model's activations over the calibration set.
      4. `adaquant` / `qdrop`: layer-wise reconstruction (`Reconstruction`).
      5. `bias_correction`: empirical per-channel bias shift.

    Layers without a bias get a zero bias when step 4 or 5 runs. The result
    is an ordinary `QuantModel`: it evaluates, fine-tunes (the steps stay
    fixed), saves and exports like any `kq.quantize_model` output.

    Args:
        model: a built Sequential or Functional model.
        calibration_data: inputs `(N, ...)`, an `(x, y)` tuple or an iterable
            of batches (at most 10,000 samples of an iterable are read, so an
            endless generator or a `.repeat()` dataset is fine; NaN/Inf is an
            error naming the batch and sample). May be None only when nothing
            needs data (`activation_bits=None`, a range-rule method, no bias
            correction).
        method: "minmax", "aciq_laplace" (alias "aciq"), "aciq_gauss",
            "mse", "adaquant" or "qdrop".
        weight_bits: int in [2, 8].
        activation_bits: int in [2, 8], or None for float activations (the
            "4/FP" columns of Park et al., ECCV 2022, Table 1).
        bias_correction: apply bias correction after the method.
        layer_overrides: as `kq.quantize_model`, e.g. mixed precision
            `{".*dw.*": {"weight_bits": 8}}` or `{"head": {"skip": True}}`.
        first_last_bits: bit-width of the first and last quantized layers, or
            None to treat them as the others.
        reconstruction: a `Reconstruction` (AdaQuant/QDrop settings).
        batch_size: batch size for collecting activations, a positive int.
        seed: seed of reconstruction's sampling and dropping.

    Returns:
        A `kq.training.QuantModel` with calibrated `FixedRange` quantizers.

    Example: `quantize(model, x_train[:512], method="aciq", weight_bits=4,
    activation_bits=None)`, run in docs/ptq_evaluation.md ("Quantize").

    References:
        Park et al., ECCV 2022, sec. 5 and Table 1; Banner et al.,
        NeurIPS 2019 (ACIQ); Hubara et al., ICML 2021 (AdaQuant); Wei et al.,
        ICLR 2022 (QDrop); Nagel et al., ICCV 2019 (bias correction).
    """
    method = get_method(method)
    spec = METHODS[method]
    batch_size = validation.positive_int(batch_size, "batch_size", "pass e.g. batch_size=128.")
    layer_overrides = validation.layer_overrides(layer_overrides)
    weight_bits = check_bits(weight_bits, "weight_bits")
    if activation_bits is not None:
        activation_bits = check_bits(activation_bits, "activation_bits")
    reconstruction = reconstruction or Reconstruction()
    needs_data = activation_bits is not None or spec.reconstruct or bias_correction
    if calibration_data is None and needs_data:
        raise ValueError(
            f"calibration_data is required for method={method!r} with "
            f"activation_bits={activation_bits} and bias_correction="
            f"{bias_correction}. Received: calibration_data=None."
        )
    x = None if calibration_data is None else calibration_array(calibration_data, model)
    model, layer_overrides = rewrites.expand_rewrites(model, layer_overrides)  # SeparableConv
    fmodel = float_view(model, add_bias=spec.reconstruct or bias_correction)
    qmodel = quantize_model(
        fmodel,
        recipe=recipe_for(method, weight_bits, activation_bits, first_last_bits),
        layer_overrides=layer_overrides,
    )
    calibrate_ranges(qmodel, fmodel, x, spec.range_rule or reconstruction.init_method, batch_size)
    # The tensors no layer input covers (`kq.tensor_coverage`): min/max of the calibration
    # data through the calibrated layers, the range the export would calibrate for them.
    initialize_activation_steps(qmodel, x)
    if spec.reconstruct:
        reconstruct(
            qmodel, fmodel, x, reconstruction, drop=spec.drop, seed=seed, batch_size=batch_size
        )
    if bias_correction:
        correct_biases(qmodel, fmodel, x, batch_size)
    return qmodel
