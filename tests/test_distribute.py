"""Strategy selection and the batch / learning-rate scaling rules."""

import pytest
import tensorflow as tf

from kqrobust import distribute


def test_auto_on_a_cpu_machine_is_the_default_strategy(monkeypatch):
    for var in ("TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(var, raising=False)
    strategy = distribute.get_strategy("auto")
    assert strategy.num_replicas_in_sync == 1
    assert isinstance(distribute.get_strategy("default"), type(tf.distribute.get_strategy()))


def test_mirrored_strategy_builds():
    assert isinstance(distribute.get_strategy("mirrored"), tf.distribute.MirroredStrategy)


def test_scaling_rules():
    strategy = tf.distribute.get_strategy()
    assert distribute.global_batch_size(64, strategy) == 64
    assert distribute.scaled_learning_rate(0.1, 512, reference_batch=128) == pytest.approx(0.4)


def test_unknown_strategy_lists_choices():
    with pytest.raises(ValueError, match="Unknown strategy: 'gpu'. Choose one of"):
        distribute.get_strategy("gpu")
