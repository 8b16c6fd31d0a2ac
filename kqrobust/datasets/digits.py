"""The offline default dataset: scikit-learn's bundled 8x8 digits.

1,797 real handwritten digits shipped inside scikit-learn, so the demo, the
tests and the examples run with no network.
"""

import numpy as np


def load_digits(test_fraction=0.2, seed=0):
    """Returns `(x_train, y_train), (x_test, y_test)`.

    Images are float32 in [0, 1] with shape `(N, 8, 8, 1)`; labels are int32
    in [0, 10). The split is stratified-free but fixed by `seed`.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ImportError(
            "The bundled digits data needs scikit-learn. Fix: pip install 'kqrobust[data]'."
        ) from err
    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])
