"""FPQ's CSD loss, kept importable here; its home is `kq.techniques.csd`."""

from kqrobust.techniques.csd import csd_loss
from kqrobust.techniques.csd import standardize_channels

__all__ = ["csd_loss", "standardize_channels"]
