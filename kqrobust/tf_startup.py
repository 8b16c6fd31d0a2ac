"""TensorFlow's start-up logs, held to `TF_CPP_MIN_LOG_LEVEL` for the `kqrobust` command.

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` when its C++ library loads, and its
own logger honours it. Since TF 2.19 some start-up lines (the oneDNN notice,
"Could not find cuda drivers") are logged through absl from the shared
libraries' static initializers, before anything has called
`absl::InitializeLog()`; absl then writes every record to stderr whatever the
level (tensorflow/tensorflow#100442; abseil/abseil-cpp#1718 and #1957 propose
honouring the threshold there). No setting reaches those records before the
library is loaded, so `import_tensorflow` loads it with stderr (file
descriptor 2) pointed at a temporary file and then writes back every line
except absl records below the level: the same rule TensorFlow applies to its
own records. Anything else written to stderr while TF loads (Python warnings,
errors, records at or above the level) comes back in order once TF is loaded.

Only the command uses this (`kqrobust/__init__.py`); imported as a library,
kqrobust leaves the user's process alone. `TF_CPP_MIN_LOG_LEVEL=0` turns the
filter off. Standard library only: this runs before TensorFlow is imported.
"""

import os
import re
import sys
import tempfile

# An absl log record's first line: severity letter, MMDD, hh:mm:ss.us, thread id and file:line]
# (absl/log/internal/log_format.cc). Before absl's time zone is set, the date is 0000 and the
# seconds count from the epoch: "I0000 00:00:1796490994.639590   18570 port.cc:153] ".
_ABSL_RECORD = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ")
# The warning absl writes before its first record when logging is not initialized.
_ABSL_NOT_INITIALIZED = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def min_log_level(environ=None):
    """`TF_CPP_MIN_LOG_LEVEL` as TensorFlow reads it: an int, 0 when unset or not a number."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def _severity(line):
    """The line's absl severity (0 INFO ... 3 FATAL), or None if it is not an absl record."""
    match = _ABSL_RECORD.match(line)
    return _SEVERITY[match.group(1)] if match else None


def filter_records(data, level):
    """`data` (bytes written to stderr) without the absl records below `level`.

    A FATAL record is always kept, as TensorFlow does. Lines that are not absl
    records (a record's continuation lines included) are kept. absl's "before
    absl::InitializeLog()" notice is kept with the first record it precedes
    that is kept, and dropped when there is none.
    """
    hidden = min(level, 3)
    kept, notice = [], None
    for line in data.splitlines(keepends=True):
        if line.startswith(_ABSL_NOT_INITIALIZED):
            notice = line
            continue
        severity = _severity(line)
        if severity is not None and severity < hidden:
            continue
        if severity is not None and notice is not None:
            kept.append(notice)
            notice = None
        kept.append(line)
    return b"".join(kept)


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


def import_tensorflow():
    """Imports TensorFlow with its start-up records below `TF_CPP_MIN_LOG_LEVEL` held back.

    Does nothing but the import when TensorFlow is loaded already, when the
    level is 0, or when stderr cannot be redirected. If the process dies
    while TensorFlow loads (a crash in its C++ code), what it wrote is lost:
    run with `TF_CPP_MIN_LOG_LEVEL=0` to see it.
    """
    level = min_log_level()
    if "tensorflow" in sys.modules or level == 0:
        import tensorflow  # noqa: F401

        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _write_all(2, filter_records(captured.read(), level))
