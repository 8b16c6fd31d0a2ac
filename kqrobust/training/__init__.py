"""The quantized model class and its training step."""

from kqrobust.training.quant_model import QuantModel

__all__ = ["QuantModel"]
