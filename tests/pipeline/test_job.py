"""The job with real processes: interrupted by SIGINT or SIGTERM in each phase it resumes
(reusing the finished float model), a corrupt backup is moved aside, a diverged phase stops it."""

import os
import signal
import subprocess
import sys

import pytest

TRAIN = [
    sys.executable,
    "-m",
    "kqrobust.cli",
    "train",
    "--dataset=digits",
    "--float_epochs=4",
    "--qat_epochs=4",
    "--steps_per_epoch=8",
    "--backup_every=3",
    "--no-export",
    "--no-report",
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _train(out_dir, *flags, stop_in=None, sig=None):
    """Runs `kqrobust train`; with `stop_in`, sends `sig` when that phase's epoch 3 begins.

    Returns `(exit code, output)`.
    """
    process = subprocess.Popen(
        TRAIN + [f"--out_dir={out_dir}", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    lines, phase = [], None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("[kqrobust] ") and " phase:" in line:
            phase = line.split()[1]
        if stop_in is not None and phase == stop_in and line.startswith("Epoch 3/"):
            process.send_signal(sig)
            break
    lines.append(process.communicate(timeout=300)[0])
    return process.returncode, "".join(lines)


def _first_epoch(output, phase):
    """The first `Epoch i/n` line the phase printed."""
    after = output.split(f"[kqrobust] {phase} phase:", 1)[1]
    return next(line for line in after.splitlines() if line.startswith("Epoch "))


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase,sig",
    [
        pytest.param("QAT", signal.SIGTERM, marks=pytest.mark.ci),
        ("QAT", signal.SIGINT),
        ("float", signal.SIGTERM),
        ("float", signal.SIGINT),
    ],
)
def test_interrupted_job_resumes(tmp_path, phase, sig):
    code, output = _train(tmp_path, stop_in=phase, sig=sig)
    assert code != 0, output[-2000:]
    assert not (tmp_path / "qat.keras").exists()
    corrupt = tmp_path / "backup" / phase.lower() / "latest.weights.h5"
    if sig == signal.SIGTERM:  # as if killed while writing: a truncated backup
        corrupt.write_bytes(corrupt.read_bytes()[:100])
    code, output = _train(tmp_path)
    assert code == 0, output[-3000:]
    assert (tmp_path / "qat.keras").exists()
    if phase == "QAT":
        assert "reusing the finished float model" in output
        assert "[kqrobust] float phase" not in output
    if sig == signal.SIGTERM:
        # Named, moved aside (the backup directory, .corrupt file included, is deleted
        # once the phase ends), and the previous backup, a few steps older, restored.
        assert f"Backup file {corrupt} could not be restored" in output
        assert f"moved aside: {corrupt}.corrupt" in output
        assert "restarts from the previous backup" in output
    assert _first_epoch(output, phase) != "Epoch 1/4", output[-3000:]


@pytest.mark.slow
def test_diverged_phase_stops_the_job(tmp_path):
    code, output = _train(tmp_path, "--learning_rate=1e6")
    assert code == 1
    assert "The float phase diverged" in output and "lower the learning rate" in output
    assert "QAT phase" not in output and not (tmp_path / "float.keras").exists()
