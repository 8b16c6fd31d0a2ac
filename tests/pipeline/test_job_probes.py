"""The main job logs probe curves to History and TensorBoard when asked."""

import glob

import pytest
import tensorflow as tf

from kqrobust.pipeline import JobConfig
from kqrobust.pipeline import run_job


def _tensorboard_tags(log_dir):
    tags = set()
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    return tags


@pytest.mark.slow
@pytest.mark.ci
def test_probe_curves_reach_tensorboard(tmp_path):
    config = JobConfig(
        dataset="digits",
        float_epochs=1,
        qat_epochs=1,
        steps_per_epoch=2,
        export=False,
        report=False,
        tensorboard=True,
        probe_every=1,
        out_dir=str(tmp_path),
    )
    run_job(config)
    tags = _tensorboard_tags(tmp_path / "logs" / "qat")
    assert {"epoch_hessian_trace", "epoch_grad_norm"} <= tags, tags
