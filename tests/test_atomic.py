"""kqrobust.atomic in real processes: readers never see a partial file; writers leave whole ones."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.atomic import atomic_path
from kqrobust.atomic import atomic_write_bytes

WORKER = pathlib.Path(__file__).with_name("atomic_worker.py")


def _flatbuffers(tmp_path):
    """Two float .tflite files of different models, ~0.5 MB each (a wide window to catch)."""
    paths = []
    for units in (300, 400):
        model = keras.Sequential(
            [keras.Input((256,)), keras.layers.Dense(units), keras.layers.Dense(10)]
        )
        path = tmp_path / f"source_{units}.tflite"
        kq.export.to_tflite(model, path=str(path), quantize=False, io_dtype="float32")
        paths.append(path)
    return paths


def _start(mode, target, argument, sources):
    process = subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(target), str(argument), *map(str, sources)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if mode == "write":
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-2000:]
    return process


def _finish(process):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])["count"]


@pytest.mark.parametrize("num_writers", [1, 2])
def test_readers_and_concurrent_writers_see_whole_files(tmp_path, num_writers):
    """One writer: a reader loading the file in a loop never fails (an in-place rewrite
    dies with SIGBUS or reads a partial model). Two writers: each leaves a whole file."""
    sources = _flatbuffers(tmp_path)
    out = tmp_path / "out"
    target, stop = out / "model.tflite", tmp_path / "stop"
    atomic_write_bytes(target, sources[0].read_bytes())
    writers = (
        [_start("write", target, stop, sources)]
        if num_writers == 1
        else [_start("write", target, stop, [source]) for source in sources]
    )
    try:
        assert _finish(_start("read", target, 4, sources)) > 10
    finally:
        stop.touch()
    assert all(_finish(writer) > 10 for writer in writers)
    assert target.read_bytes() in [s.read_bytes() for s in sources]
    assert [p.name for p in out.iterdir()] == ["model.tflite"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            pathlib.Path(temporary).write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
    with atomic_path(target) as temporary:
        assert temporary.endswith(".md") and pathlib.Path(temporary).parent == tmp_path
        pathlib.Path(temporary).write_text("new")
    assert target.read_text() == "new"
    np.testing.assert_equal(len(list(tmp_path.iterdir())), 1)
