"""Quantized layers: Conv2D, DepthwiseConv2D and Dense with quantizers and hooks."""

from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.base import check_initialized
from kqrobust.layers.quant_layers import QuantConv2D
from kqrobust.layers.quant_layers import QuantDense
from kqrobust.layers.quant_layers import QuantDepthwiseConv2D

__all__ = ["QuantConv2D", "QuantDense", "QuantDepthwiseConv2D", "QuantizeMixin", "check_initialized"]
