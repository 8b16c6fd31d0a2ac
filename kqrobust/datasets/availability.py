"""Fail fast when a dataset is neither prepared locally nor downloadable.

`tfds.load` with no network retries for about 200 s before failing (DESIGN.md).
kqrobust checks first: prepared data is used as is; otherwise a short socket
probe of the download host decides, within seconds, whether to download.
"""

import socket


class DatasetUnavailableError(RuntimeError):
    """The dataset is not prepared locally and cannot be downloaded."""


def host_reachable(host, port=443, timeout=3.0):
    """True if a TCP connection to `host:port` opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_message(name, data_dir, reason):
    return (
        f"Dataset '{name}' is not available: {reason}. Received: data_dir={data_dir!r}. "
        f"Fix: on a machine with internet run `tfds build {name} --data_dir=DIR` (or pass "
        "download=True there), copy DIR here and pass data_dir=DIR (--data_dir=DIR); "
        "offline, use the bundled digits (--dataset=digits)."
    )
