"""Training techniques: registered components that plug into the layer hooks or the train step.

`kq.Recipe(techniques=[...])` holds them; the built-in ones also have a
keyword form (`kq.Recipe(satnl_alpha=1.0, sam="asam")`). Adding one is a
subclass of `Technique` in its own file plus `@register_technique`
(`docs/extending.md`).
"""

from kqrobust.techniques.base import EXCLUDE_TOKENS
from kqrobust.techniques.base import QuantizedLayers
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import TrainingStep
from kqrobust.techniques.base import field_owner
from kqrobust.techniques.base import get
from kqrobust.techniques.base import register_technique
from kqrobust.techniques.base import registered
from kqrobust.techniques.base import registered_as
from kqrobust.techniques.base import serialize
from kqrobust.techniques.csd import CSDTechnique
from kqrobust.techniques.kure import KURETechnique
from kqrobust.techniques.sam import SAMTechnique
from kqrobust.techniques.satnl import SatNLTechnique
from kqrobust.techniques.sfp import SFPTechnique
from kqrobust.techniques.symreg import SymRegTechnique

__all__ = [
    "CSDTechnique",
    "EXCLUDE_TOKENS",
    "KURETechnique",
    "QuantizedLayers",
    "SAMTechnique",
    "SFPTechnique",
    "SatNLTechnique",
    "SymRegTechnique",
    "Technique",
    "TrainingStep",
    "field_owner",
    "get",
    "register_technique",
    "registered",
    "registered_as",
    "serialize",
]
