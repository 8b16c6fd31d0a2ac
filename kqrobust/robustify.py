"""`kq.robustify`: robust float training for later post-training quantization."""

from kqrobust import validation
from kqrobust.configs.recipe import get_recipe
from kqrobust.quantize import quantize_model


def robustify(model, recipe="robust", layer_overrides=None, strict=False):
    """Clones `model` into a float model with the recipe's robust-training parts.

    No fake quantization: Conv2D, DepthwiseConv2D and Dense become
    `QuantConv2D`/... layers without quantizers, carrying the recipe's SatNL
    (`weight_transform`), SymReg and KURE (`kernel_losses`); the returned
    `QuantModel`'s `train_step` runs ASAM/SAM if the recipe says so. Train it
    with `compile`/`fit`, then quantize it with `kq.ptq.quantize` (which
    folds `f(W)` into the kernels through `kq.ptq.float_view`) or export it.

    Args:
        model: a built Sequential or Functional Keras model.
        recipe: a preset name, dict or `kq.Recipe`; its `fake_quant` is set
            to False (bit-widths and quantizers are ignored). Default
            `"robust"`: SymReg + SatNL + ASAM (Park, Jang & Park, ECCV 2022,
            Table 2's "All").
        layer_overrides: `{layer name or regex: {"skip": True}}` to keep
            layers plain Keras layers.
        strict: as in `kq.quantize_model`.

    Returns:
        A `kq.training.QuantModel` holding the recipe.

    Raises:
        ValueError: a technique of the recipe needs fake quantization (SFP:
            its noise width is the LSQ input step).

    Example: `rmodel = kq.robustify(model, recipe="robust")`, then compile and
    fit it as any Keras model, then `kq.ptq.quantize(rmodel, x[:256],
    method="aciq", weight_bits=4)`; docs/robust_training.md runs it.

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022 (robust float
        training for PTQ: SymReg + SatNL + ASAM).
    """
    recipe = get_recipe(recipe)
    layer_overrides = validation.layer_overrides(layer_overrides)
    for technique in recipe.techniques:
        if technique.needs_fake_quant:
            raise ValueError(
                f"kq.robustify builds a float model, but recipe '{recipe.name}' has "
                f"{technique.describe()} ({technique.needs_fake_quant}). Fix: use "
                f"kq.quantize_model for this recipe, or {technique.how_to_remove()}."
            )
    return quantize_model(
        model,
        recipe=recipe.replace(fake_quant=False),
        layer_overrides=layer_overrides,
        strict=strict,
    )
