"""The main job (float training, QAT, evaluation, export, reports) as a library."""

from kqrobust.pipeline.job import MODELS
from kqrobust.pipeline.job import JobConfig
from kqrobust.pipeline.job import TrainingDivergedError
from kqrobust.pipeline.job import run_job

__all__ = ["JobConfig", "MODELS", "TrainingDivergedError", "run_job"]
