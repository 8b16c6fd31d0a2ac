"""QAT recipes train under MirroredStrategy with two logical CPU devices (in a subprocess)."""

import pathlib

import pytest

from kqrobust.testing import run_script_report

SCRIPT = pathlib.Path(__file__).with_name("mirrored_steps.py")


@pytest.mark.parametrize("recipe", ["lsq", "sam"])
def test_recipe_trains_under_mirrored_strategy(recipe):
    from kqrobust.configs import PRESETS

    if recipe not in PRESETS:
        pytest.fail(f"preset {recipe!r} is missing")
    report = run_script_report(SCRIPT, recipe, timeout=300)
    assert report["replicas"] == 2
    assert report["finite"] and len(report["losses"]) == 2
    assert report["losses"][-1] > 0
