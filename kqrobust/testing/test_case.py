"""A shared TestCase, as keras' `testing.TestCase`."""

import os
import tempfile
import unittest

import keras
import numpy as np


class TestCase(unittest.TestCase):
    """Base class for kqrobust tests: serialization and closeness checks."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1337)
        self.tmp_dir = tempfile.mkdtemp(prefix="kqrobust_test_")

    def assertAllClose(self, actual, desired, rtol=1e-6, atol=1e-6, msg=""):
        np.testing.assert_allclose(
            np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=msg
        )

    def run_serialization_test(self, obj, deserialize=None):
        """`get_config` -> `from_config` round trip; returns the revived object.

        The revived object must have the same class and an identical config.
        """
        config = obj.get_config()
        revived = (deserialize or type(obj).from_config)(config)
        self.assertIs(type(revived), type(obj))
        self.assertEqual(revived.get_config(), config)
        serialized = keras.saving.serialize_keras_object(obj)
        revived2 = keras.saving.deserialize_keras_object(serialized)
        self.assertIs(type(revived2), type(obj))
        self.assertEqual(revived2.get_config(), config)
        return revived

    def run_model_saving_test(self, model, x, atol=0.0):
        """Saves `model` as `.keras`, loads it in safe mode with no
        custom_objects and checks identical predictions."""
        path = os.path.join(self.tmp_dir, "model.keras")
        expected = model.predict(x, verbose=0)
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        self.assertIs(type(loaded), type(model))
        self.assertAllClose(loaded.predict(x, verbose=0), expected, rtol=0, atol=atol)
        return loaded
