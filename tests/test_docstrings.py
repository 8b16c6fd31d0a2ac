"""Every docstring example (`>>>`) in kqrobust runs, as a doctest.

An example is self-contained: it sees `kq`, `keras`, `np`, `tf` and its own
module's names, nothing else. Workflows too long for a docstring live in
docs/*.md, whose python blocks tests/test_docs.py runs.
"""

import doctest
import importlib
import pathlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq

PACKAGE = pathlib.Path(kq.__file__).parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], "kqrobust."):
        if info.ispkg:
            path = PACKAGE.joinpath(*info.name.split(".")[1:], "__init__.py")
        else:
            path = PACKAGE.joinpath(*info.name.split(".")[1:]).with_suffix(".py")
        if ">>>" in path.read_text():
            names.append(info.name)
    return names


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for name in _modules_with_examples():
        module = importlib.import_module(name)
        for test in finder.find(module, extraglobs={"kq": kq, "keras": keras, "np": np, "tf": tf}):
            if test.examples:
                tests.setdefault(test.name, test)
    return [tests[name] for name in sorted(tests)]


DOCTESTS = _doctests()


def test_examples_are_collected():
    assert len(DOCTESTS) >= 20, [t.name for t in DOCTESTS]


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda t: t.name.removeprefix("kqrobust."))
def test_docstring_example_runs(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    output = []
    runner.run(test, out=output.append, clear_globs=False)
    assert runner.failures == 0, "".join(output)
