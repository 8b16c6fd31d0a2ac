"""examples/robustness_table.py runs end to end and writes the Table 2-shaped Markdown."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_example_smoke(tmp_path):
    out = tmp_path / "table.md"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "robustness_table.py"),
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--width",
            "8",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = out.read_text()
    assert "| method | FP | 4-bit | 3-bit | 2-bit |" in text
    assert "| Baseline | " in text and "| + SymReg + SatNL + ASAM (All) | " in text
    assert text.count(" ± ") == 8
    assert "| 1 | robust |" in text
