"""SAM/ASAM under MirroredStrategy on two logical CPUs equal one device for the same global batch."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("sam_mirrored_parity.py")


@pytest.mark.parametrize("method", [
    "asam", pytest.param("sam", marks=[pytest.mark.slow, pytest.mark.ci])])
def test_two_replicas_match_one_device(method):
    result = subprocess.run([sys.executable, str(SCRIPT), method], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["max_update"] > 1e-3  # the weights did move
    assert report["max_diff"] < 1e-5 * max(1.0, report["max_update"]) + 1e-6
    assert report["losses"][0] == pytest.approx(report["losses"][1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["robust", "fpq"])
def test_robust_presets_train_under_mirrored_strategy(recipe):
    """SFP's noise generator, CSD's teacher and ASAM run per replica (two logical CPUs)."""
    script = SCRIPT.parents[1] / "pipeline" / "mirrored_steps.py"
    result = subprocess.run([sys.executable, str(script), recipe], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["finite"] and len(report["losses"]) == 2
