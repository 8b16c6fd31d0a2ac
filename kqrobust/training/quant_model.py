"""`QuantModel`: the one keras.Model subclass whose train_step recipes extend."""

import keras

from kqrobust.api_export import kqrobust_export
from kqrobust.configs.recipe import Recipe
from kqrobust.configs.recipe import get_recipe
from kqrobust.training.teacher import TeacherRef


@kqrobust_export
class QuantModel(keras.Model):
    """A Functional model built by `kq.quantize_model` or `kq.robustify`.

    It behaves as any Functional model (compile, fit, save, load) and carries
    its `recipe`. It keeps a reference to the float model it was built from
    (`teacher`, frozen; FPQ's distillation teacher); the reference is not
    saved with the model, so after `load_model` call `set_teacher(model)` if
    the recipe needs it.
    """

    def __init__(self, *args, recipe=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = None if recipe is None else get_recipe(recipe)
        self._teacher_ref = TeacherRef()

    @property
    def teacher(self):
        """The frozen float model, or None (e.g. after loading)."""
        return self._teacher_ref.model

    def set_teacher(self, model):
        """Sets the frozen float teacher (not saved with this model)."""
        if model is not None:
            model.trainable = False
        self._teacher_ref.model = model

    def get_config(self):
        config = super().get_config()
        config["recipe"] = None if self.recipe is None else self.recipe.get_config()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        recipe = config.pop("recipe", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.recipe = None if recipe is None else Recipe.from_config(recipe)
        return model
