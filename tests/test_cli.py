"""The `kqrobust` command sets TensorFlow's log level before TensorFlow loads."""

import os
import subprocess
import sys

import pytest

import kqrobust


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (
            ["/venv/bin/kqrobust", "train"],
            ["/venv/bin/python", "/venv/bin/kqrobust", "train"],
            True,
        ),
        (["-m"], ["python", "-u", "-m", "kqrobust.cli", "export"], True),
        (["train.py"], ["python", "train.py"], False),
        (["-m"], ["python", "-m", "pytest"], False),
        ([], [], False),
    ],
)
def test_run_as_command(monkeypatch, argv, orig_argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert kqrobust._run_as_command() is expected


def test_command_hides_tensorflow_start_up_logs():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "kqrobust.cli", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: kqrobust" in result.stdout
    # TF's C++ INFO logs (this one names the CPU instructions TF was not built with) are off, and
    # so are the oneDNN and CUDA-stub records TF >= 2.19 logs through absl before absl logging is
    # initialised, which ignore TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442): the command
    # holds them back (kqrobust/tf_startup.py).
    for start_up in ("cpu_feature_guard", "port.cc", "cudart_stub", "absl::InitializeLog"):
        assert start_up not in result.stderr, result.stderr
