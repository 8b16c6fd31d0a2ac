"""A writer or reader process for tests/test_atomic.py.

    python atomic_worker.py write TARGET STOP SOURCE [SOURCE ...]
        prints "ready", then rewrites TARGET with kqrobust.atomic.atomic_write_bytes,
        cycling the sources, until the file STOP exists
    python atomic_worker.py read TARGET SECONDS SOURCE [SOURCE ...]
        loads TARGET in LiteRT, runs it and reads its bytes in a loop for SECONDS;
        every read must equal a source

Prints one JSON line last: {"count": how many writes or loads}.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _atomic_module():
    """kqrobust/atomic.py loaded by path: it needs only the standard library, and
    importing the kqrobust package (TensorFlow) would take seconds."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "kqrobust", "atomic.py")
    spec = importlib.util.spec_from_file_location("kqrobust_atomic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(target, stop, contents):
    atomic_write_bytes = _atomic_module().atomic_write_bytes
    print("ready", flush=True)
    count = 0
    while not os.path.exists(stop):
        atomic_write_bytes(target, contents[count % len(contents)])
        count += 1
    return count


def read(target, seconds, contents):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    deadline = time.monotonic() + float(seconds)
    count = 0
    while time.monotonic() < deadline:
        interpreter = Interpreter(model_path=target)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        with open(target, "rb") as f:
            data = f.read()
        if data not in contents:
            raise SystemExit(f"read {len(data)} bytes that are no whole source file")
        count += 1
    return count


if __name__ == "__main__":
    mode, target, argument, *sources = sys.argv[1:]
    contents = [open(path, "rb").read() for path in sources]
    count = (write if mode == "write" else read)(target, argument, contents)
    print(json.dumps({"count": count}))
