"""SAM/ASAM under MirroredStrategy on two logical CPUs equals one device, same global batch."""

import pathlib

import pytest

from kqrobust.testing import run_script_report

SCRIPT = pathlib.Path(__file__).with_name("sam_mirrored_parity.py")


@pytest.mark.parametrize(
    "method", ["asam", pytest.param("sam", marks=[pytest.mark.slow, pytest.mark.ci])]
)
def test_two_replicas_match_one_device(method):
    report = run_script_report(SCRIPT, method, timeout=300)
    assert report["replicas"] == 2
    assert report["max_update"] > 1e-3  # the weights did move
    assert report["max_diff"] < 1e-5 * max(1.0, report["max_update"]) + 1e-6
    assert report["losses"][0] == pytest.approx(report["losses"][1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["robust", "fpq"])
def test_robust_presets_train_under_mirrored_strategy(recipe):
    """SFP's noise generator, CSD's teacher and ASAM run per replica (two logical CPUs)."""
    script = SCRIPT.parents[1] / "pipeline" / "mirrored_steps.py"
    report = run_script_report(script, recipe, timeout=600)
    assert report["replicas"] == 2 and report["finite"] and len(report["losses"]) == 2
