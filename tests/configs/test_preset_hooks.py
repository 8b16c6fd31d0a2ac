"""Every preset builds the layer hooks it built before techniques were components.

The expected values are those of the planner before the change (read from
its `robust_hooks` on the same five layers: small_cnn's stem, depthwise,
pointwise, conv and Dense head), written out per layer in hook order:
weight transform, input perturbation, kernel losses.
"""

import pytest

import kqrobust as kq
from kqrobust.configs.planner import robust_hooks
from kqrobust.testing import SMALL_CNN_LAYERS

LAYERS = SMALL_CNN_LAYERS
SATNL = "SatNL(1.0)"
SYMREG = "SymReg(0.1, 0.1, -1)"
KURE = "KURE(1.8, 0.25)"  # lambda = 1 over the 4 layers KURE's exclusion leaves
EXPECTED = {
    "lsq": {},
    "satnl": {name: [SATNL] for name, _, _ in LAYERS},
    "symreg": {"stem": [SYMREG], "pw": [SYMREG], "conv2": [SYMREG]},
    "kure": {"dw": [KURE], "pw": [KURE], "conv2": [KURE], "logits": [KURE]},
    "sam": {},
    "asam": {},
    "robust": {
        "stem": [SATNL, SYMREG],
        "dw": [SATNL],
        "pw": [SATNL, SYMREG],
        "conv2": [SATNL, SYMREG],
        "logits": [SATNL],
    },
    "robust+kure": {
        "stem": [SATNL, SYMREG],
        "dw": [SATNL, KURE],
        "pw": [SATNL, SYMREG, KURE],
        "conv2": [SATNL, SYMREG, KURE],
        "logits": [SATNL, KURE],
    },
    "fpq": {"stem": ["SFP(0.1)"], "dw": ["SFP(0.1)"], "pw": ["SFP(0.1)"], "conv2": ["SFP(0.1)"]},
    "minmax": {},
}
# What each preset's train step adds (the techniques that change QuantModel's step).
STEP = {
    "sam": [("sam", "sam", 0.05)],
    "asam": [("sam", "asam", 0.5)],
    "robust": [("sam", "asam", 1.0)],
    "robust+kure": [("sam", "asam", 1.0)],
    "fpq": [("csd", 1.0)],
}


def describe(hooks):
    out = []
    if hooks["weight_transform"] is not None:
        out.append(f"SatNL({hooks['weight_transform'].alpha})")
    if hooks["input_perturbation"] is not None:
        out.append(f"SFP({hooks['input_perturbation'].p})")
    for loss in hooks["kernel_losses"]:
        if isinstance(loss, kq.regularizers.SymReg):
            out.append(f"SymReg({loss.lambda1}, {loss.lambda2}, {loss.channel_axis})")
        else:
            out.append(f"KURE({loss.target}, {loss.weight})")
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_builds_the_same_hooks_and_step(name):
    recipe = kq.configs.get_recipe(name)
    hooks = robust_hooks(recipe, LAYERS)
    assert {n: describe(h) for n, h in hooks.items() if describe(h)} == EXPECTED[name]
    step = [
        (t.name, t.method, t.rho) if t.name == "sam" else (t.name, t.weight)
        for t in recipe.techniques
        if t.adds_loss or t.computes_gradients
    ]
    assert step == STEP.get(name, [])
