"""QAT recipes train under MirroredStrategy with two logical CPU devices (in a subprocess)."""

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("mirrored_steps.py")


@pytest.mark.parametrize("recipe", ["lsq", "sam"])
def test_recipe_trains_under_mirrored_strategy(recipe):
    from kqrobust.configs import PRESETS

    if recipe not in PRESETS:
        pytest.fail(f"preset {recipe!r} is missing")
    result = subprocess.run([sys.executable, str(SCRIPT), recipe], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["finite"] and len(report["losses"]) == 2
    assert report["losses"][-1] > 0
