"""examples/probe_table.py runs end to end and writes its Markdown table."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_example_smoke(tmp_path):
    out = tmp_path / "probes.md"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "probe_table.py"),
            "--seeds",
            "1",
            "--float_epochs",
            "1",
            "--qat_epochs",
            "1",
            "--width",
            "8",
            "--probe_samples",
            "64",
            "--depth",
            "3",
            "--num_samples",
            "2",
            "--ascent_steps",
            "2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = out.read_text()
    assert "| recipe | test acc (%) | gap (pts) | Tr(H) |" in text
    for recipe in ("lsq", "fpq", "robust"):
        assert f"| {recipe} | " in text and f"| 0 | {recipe} | " in text
    assert text.count(" ± ") == 3 * 7
