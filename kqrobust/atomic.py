"""Atomic artifact writes: a temporary file in the same directory, then `os.replace`.

A reader never sees a half-written file (it opens the old file or the new
one; a reader that already has the old file open or mapped keeps it), and
concurrent writers each leave a whole file (the last `os.replace` wins). A
missing parent directory is created.
"""

import contextlib
import os
import secrets


def _temporary_path(path):
    """`dir/.name.<random>.ext` beside `path`; the extension is kept (Keras and
    Matplotlib pick the format from it)."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(directory, f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{ext}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; on success it replaces `path`.

    On an error the temporary file is removed and `path` is left as it was.

    Example:
        >>> with atomic_path("runs/x/notes.txt") as tmp:
        ...     with open(tmp, "w") as f:
        ...         _ = f.write("done")
        >>> open("runs/x/notes.txt").read()
        'done'
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = _temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically, flushed to disk first."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
