"""A value Keras' attribute tracking leaves alone.

Assigning a dict, a list or a model to an attribute of a layer or model
makes Keras track it: a dict of variables is saved as an extra container,
and a model's weights join the outer model's (and its checkpoints). The
quantizers' variables by tensor (the variables themselves are the layer's,
from `add_weight`), and a `QuantModel`'s frozen float teacher and its
techniques' per-model state (their caches, the feature models CSD reads)
must stay out, so they sit in this plain object.
"""


class Untracked:
    """Holds `value` where Keras' attribute tracking does not look."""

    def __init__(self, value=None):
        self.value = value
