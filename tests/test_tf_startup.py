"""The `kqrobust` command's TensorFlow start-up records, held to TF_CPP_MIN_LOG_LEVEL."""

import subprocess
import sys
import textwrap

import pytest

from kqrobust import tf_startup

NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = b"I0000 00:00:1796490861.994332   15584 port.cc:153] oneDNN custom operations are on.\n"
CUDA = b"I0000 00:00:1796490861.994587   15584 cudart_stub.cc:31] Could not find cuda drivers.\n"
WARNING = b"W1203 18:22:27.123456   15584 computation_placer.cc:177] already registered.\n"
ERROR = b"E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN.\n"
FATAL = b"F0000 00:00:1758131045.203198 3722035 platform.cc:12] Check failed: ok\n"
# Not absl records: a Python warning, a continuation line, TF's own logger's format.
OTHER = (
    b"/x/y.py:74: UserWarning: `shuffle=True` was passed\n",
    b"To enable the following instructions: AVX2 FMA\n",
    b"2025-09-17 14:44:05.157831: I external/local_xla/cudart_stub.cc:32] Could not find\n",
)
START_UP = NOTICE + INFO + CUDA + OTHER[0] + WARNING + ERROR + OTHER[1] + FATAL + OTHER[2]


@pytest.mark.parametrize(
    "level, expected",
    [
        (0, START_UP),
        (1, OTHER[0] + NOTICE + WARNING + ERROR + OTHER[1] + FATAL + OTHER[2]),
        (2, OTHER[0] + NOTICE + ERROR + OTHER[1] + FATAL + OTHER[2]),
        (3, OTHER[0] + OTHER[1] + NOTICE + FATAL + OTHER[2]),
        (9, OTHER[0] + OTHER[1] + NOTICE + FATAL + OTHER[2]),  # FATAL is always kept
    ],
)
def test_filter_drops_absl_records_below_the_level(level, expected):
    assert tf_startup.filter_records(START_UP, level) == expected


def test_notice_goes_when_every_record_after_it_does():
    assert tf_startup.filter_records(NOTICE + INFO + CUDA, 3) == b""
    assert tf_startup.filter_records(NOTICE + INFO + OTHER[0], 1) == OTHER[0]
    # A partial last line (no newline) is kept as it is.
    assert tf_startup.filter_records(OTHER[0] + b"partial", 3) == OTHER[0] + b"partial"


@pytest.mark.parametrize(
    "value, level", [(None, 0), ("", 0), ("2", 2), ("3", 3), ("-1", 0), ("x", 0)]
)
def test_min_log_level_reads_the_variable_as_tensorflow_does(value, level):
    environ = {} if value is None else {"TF_CPP_MIN_LOG_LEVEL": value}
    assert tf_startup.min_log_level(environ) == level


# A process whose "tensorflow" is a stand-in module that writes start-up records straight to
# file descriptor 2, as TF's C++ static initializers do. tf_startup is loaded from its file:
# importing the kqrobust package would import the stand-in first.
SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys

    sys.path.insert(0, sys.argv[1])
    spec = importlib.util.spec_from_file_location("tf_startup", sys.argv[2])
    tf_startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf_startup)

    sys.stderr.write("before\\n")
    tf_startup.import_tensorflow()
    assert sys.modules["tensorflow"].__file__.startswith(sys.argv[1])
    sys.stderr.write("after\\n")
    """
)
FAKE_TENSORFLOW = f"import os\nos.write(2, {INFO + OTHER[0] + ERROR + FATAL!r})\n"


@pytest.mark.parametrize(
    "level, expected",
    [
        ("3", b"before\n" + OTHER[0] + FATAL + b"after\n"),
        ("1", b"before\n" + OTHER[0] + ERROR + FATAL + b"after\n"),
        ("0", b"before\n" + INFO + OTHER[0] + ERROR + FATAL + b"after\n"),
    ],
)
def test_import_filters_what_tensorflow_writes_to_stderr(tmp_path, level, expected):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), tf_startup.__file__],
        env={"TF_CPP_MIN_LOG_LEVEL": level, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    assert result.stderr == expected


def test_an_import_error_still_shows_what_was_written(tmp_path):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW + "raise ImportError('no TF')\n")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), tf_startup.__file__],
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(b"before\n" + OTHER[0] + FATAL + b"Traceback")
    assert b"ImportError: no TF" in result.stderr
