"""A reference to the frozen float teacher that Keras does not track.

Assigning a model to an attribute of another model makes its weights part of
the outer model's (and of its checkpoints). The teacher must stay outside:
this holder is a plain object, which Keras' attribute tracking ignores.
"""


class TeacherRef:
    """Holds the float model `quantize_model` started from."""

    def __init__(self, model=None):
        self.model = model
