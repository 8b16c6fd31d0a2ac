"""examples/export_parity.py runs end to end and prints docs/export.md's Measured parity table."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_example_smoke():
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "export_parity.py"),
            "--float_epochs",
            "1",
            "--qat_epochs",
            "1",
            "--width",
            "8",
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = [line for line in completed.stdout.splitlines() if line.startswith("| W")]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table}
    for model in ("W8A8", "W4A8", "W4A4"):
        assert (model, "LiteRT int8") in rows and (model, "onnxruntime") in rows
    assert ("W4A4", "LiteRT int8, vs the 8-bit-activation reference") in rows
