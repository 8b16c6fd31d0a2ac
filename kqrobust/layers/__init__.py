"""Quantized layers and the layer-type registry.

Each module below defines one Keras layer type's quantized class, export class
and registry entry (`registry.LayerType`).
"""

from kqrobust.layers import attention
from kqrobust.layers import registry
from kqrobust.layers import rewrites
from kqrobust.layers import separable
from kqrobust.layers.attention import ExportDotProductAttention
from kqrobust.layers.attention import QuantDotProductAttention
from kqrobust.layers.base import HOOK_KEYS
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.base import check_initialized
from kqrobust.layers.conv import ExportConv2D
from kqrobust.layers.conv import QuantConv2D
from kqrobust.layers.conv1d import ExportConv1D
from kqrobust.layers.conv1d import ExportDepthwiseConv1D
from kqrobust.layers.conv1d import QuantConv1D
from kqrobust.layers.conv1d import QuantDepthwiseConv1D
from kqrobust.layers.conv_transpose import ExportConv2DTranspose
from kqrobust.layers.conv_transpose import QuantConv2DTranspose
from kqrobust.layers.dense import ExportDense
from kqrobust.layers.dense import QuantDense
from kqrobust.layers.depthwise import ExportDepthwiseConv2D
from kqrobust.layers.depthwise import QuantDepthwiseConv2D
from kqrobust.layers.einsum_dense import ExportEinsumDense
from kqrobust.layers.einsum_dense import QuantEinsumDense
from kqrobust.layers.export_base import ExportMixin
from kqrobust.layers.quant_identity import QuantIdentity
from kqrobust.layers.registry import LayerType
from kqrobust.layers.registry import layer_type_of
from kqrobust.layers.registry import layer_types
from kqrobust.layers.registry import register_layer_type

__all__ = [
    "ExportConv1D",
    "ExportConv2D",
    "ExportConv2DTranspose",
    "ExportDense",
    "ExportDepthwiseConv1D",
    "ExportDepthwiseConv2D",
    "ExportDotProductAttention",
    "ExportEinsumDense",
    "ExportMixin",
    "HOOK_KEYS",
    "LayerType",
    "QuantConv1D",
    "QuantConv2D",
    "QuantConv2DTranspose",
    "QuantDense",
    "QuantDepthwiseConv1D",
    "QuantDepthwiseConv2D",
    "QuantDotProductAttention",
    "QuantEinsumDense",
    "QuantIdentity",
    "QuantizeMixin",
    "attention",
    "check_initialized",
    "layer_type_of",
    "layer_types",
    "register_layer_type",
    "registry",
    "rewrites",
    "separable",
]
