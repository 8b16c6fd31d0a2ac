"""Model builders: plain Functional models that quantize_model handles."""

from kqrobust.models.mobilenet_v2 import mobilenet_v2
from kqrobust.models.resnet import resnet18
from kqrobust.models.resnet import resnet20
from kqrobust.models.small_cnn import small_cnn

__all__ = ["mobilenet_v2", "resnet18", "resnet20", "small_cnn"]
