"""kqrobust.inputs: one reader for arrays, (x, y) tuples and iterables, capped and checked."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from kqrobust import inputs


def _x(n=10):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)


@pytest.mark.parametrize("kind", ["array", "xy", "dataset", "list", "pydataset"])
def test_every_form_gives_the_same_inputs(kind):
    x = _x()
    y = np.arange(10)

    class Seq(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]

    data = {
        "array": x,
        "xy": (x, y),
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        "list": [x[:4], x[4:]],
        "pydataset": Seq(),
    }[kind]
    np.testing.assert_array_equal(inputs.read_inputs(data), x)
    np.testing.assert_array_equal(inputs.read_inputs(data, num_samples=7), x[:7])


@pytest.mark.parametrize("endless", ["generator", "repeat"])
def test_iterables_are_capped(endless):
    x = _x(100)
    data = (
        (x for _ in itertools.count())
        if endless == "generator"
        else tf.data.Dataset.from_tensor_slices(x).batch(100).repeat()
    )
    assert len(inputs.read_inputs(data)) == inputs.MAX_ITERABLE_SAMPLES
    assert len(inputs.read_inputs(data, num_samples=250)) == 250


def test_labels_single_samples_and_errors():
    x, y = _x(), np.arange(10)
    pairs = list(inputs.batches((x, y), batch_size=4, labels=True))
    assert [len(p[1]) for p in pairs] == [4, 4, 2]
    singles = list(inputs.batches(tf.data.Dataset.from_tensor_slices(x), sample_shape=(2, 2)))
    assert len(singles) == 10 and singles[0].shape == (1, 2, 2)
    with pytest.raises(ValueError, match="data is empty: it holds no sample"):
        list(inputs.batches([]))
    with pytest.raises(ValueError, match=r"must yield \(x, y\) batches"):
        list(inputs.batches([x], labels=True))
    with pytest.raises(ValueError, match="an iterable of batches. Received: int"):
        list(inputs.batches(3))
    with pytest.raises(
        ValueError, match="batch_size must be a positive int. Received: batch_size=0"
    ):
        list(inputs.batches(x, batch_size=0))
    bad = x.copy()
    bad[6, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at batch 1, sample 2 within"):
        list(inputs.batches([bad[:4], bad[4:]]))
    assert len(list(inputs.batches(bad, check_finite=False))) == 1
