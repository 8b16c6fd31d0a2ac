"""`QuantModel`: the one keras.Model subclass whose train_step recipes extend."""

import inspect

import keras
import tensorflow as tf

from kqrobust import quantization_summary
from kqrobust import validation
from kqrobust.api_export import kqrobust_export
from kqrobust.callbacks.batchnorm_recalibration import BatchNormRecalibration
from kqrobust.callbacks.int32_bias_rounding import Int32BiasRounding
from kqrobust.configs.recipe import Recipe
from kqrobust.configs.recipe import get_recipe
from kqrobust.layers import check_initialized
from kqrobust.recalibration import batchnorm_layers
from kqrobust.recalibration import initialize_activation_steps
from kqrobust.recalibration import input_batches
from kqrobust.techniques.base import TrainingStep
from kqrobust.techniques.csd import csd_layer_names
from kqrobust.training import nonfinite
from kqrobust.untracked import Untracked

# The logged part of the loss that is not a technique's own term.
TASK_LOSS = "task_loss"


@kqrobust_export
class QuantModel(keras.Model):
    """A Functional model built by `kq.quantize_model` or `kq.robustify`.

    It behaves as any Functional model (compile, fit, save, load) and carries
    its `recipe`. It keeps a reference to the float model it was built from
    (`teacher`, frozen; FPQ's distillation teacher); the reference is not
    saved with the model, so after `load_model` call `set_teacher(model)` if
    the recipe needs it.

    `fit` sets what QAT needs from the training data: activation steps that
    never saw data initialise from the first batch, and BatchNorm statistics
    are re-estimated for the trained weights before each validation and at
    the end (`kq.callbacks.BatchNormRecalibration`; `batchnorm_samples`
    samples each time, 0 turns it off). After each re-estimation the biases
    move onto the int32 grid the full-integer file stores them on
    (`kq.callbacks.Int32BiasRounding`; `int32_biases=False` turns it off),
    so `predict` after `fit` computes what LiteRT computes. `predict`,
    `evaluate` and export refuse a model whose activation steps never saw
    data.

    `train_step` runs the recipe's techniques (`recipe.techniques`,
    `kq.techniques`); with none that adds to the step it is Keras' own step
    (SatNL, SymReg, KURE and SFP live in the layers, through their hooks).
    Otherwise one step is:

    1. each technique's `prepare` (CSD: one inference-mode forward of the
       frozen teacher);
    2. a training forward (with the outputs of the layers the techniques'
       `feature_layers` name), the compiled loss, plus each technique's
       `loss` (CSD: `csd_weight * csd_loss` over the quantized conv layers,
       `csd_layer_names()`), each divided by the number of replicas as Keras
       divides the compiled loss;
    3. the gradients: a technique's `gradients` (SAM/ASAM: a second pass at
       the perturbed kernels, the kernels and non-trainable state restored
       afterwards; `kq.techniques.SAMTechnique`), else the tape's;
    4. `optimizer.apply_gradients`, then the metrics. The reported loss and
       metrics are those of the first (unperturbed) pass.

    Under a `tf.distribute` strategy each replica runs this on its share of
    the batch: SAM all-reduces `g` before perturbing, so every replica
    perturbs alike; CSD's channel statistics are each replica's, as
    BatchNorm's are.

    Logged values with CSD (Keras' convention: `loss` is what the optimizer
    minimises): `loss = task_loss + csd_loss`; `task_loss` is the compiled
    loss (the cross-entropy) plus any regularization penalties (SymReg, KURE),
    i.e. what `val_loss` measures, and `csd_loss` is `csd_weight * L_CSD`.
    Summed over channels and layers, `csd_loss` can be large (tens) while the
    cross-entropy is small. Both are training-only: `evaluate` reports neither.
    """

    def __init__(self, *args, recipe=None, batchnorm_samples=2048, int32_biases=True, **kwargs):
        super().__init__(*args, **kwargs)
        # Per-model state of the recipe's techniques, outside Keras' attribute
        # tracking: each technique's dict (`technique_cache`), this model with
        # extra layer outputs by layer names (`_feature_model`), and the
        # training-only loss terms that have metrics.
        self._technique_state = Untracked({})
        self._feature_models = Untracked({})
        self._term_names = Untracked(set())
        self.recipe = None if recipe is None else get_recipe(recipe)
        self.batchnorm_samples = batchnorm_samples
        self.int32_biases = int32_biases
        self.nonfinite_batches = "raise"
        self._teacher_ref = Untracked()  # the float teacher, outside the weights

    def quantization_summary(self, print_fn=None):
        """One `LayerRow` per layer: quantized at which bits, or float and why.

        Args:
            print_fn: optional callable given the summary as a text table
                (e.g. `print`).

        Returns:
            A list of `kq.quantization_summary.LayerRow`.
        """
        rows = quantization_summary.quantization_summary(self)
        if print_fn is not None:
            print_fn(quantization_summary.format_summary(rows, self.name))
        return rows

    @property
    def teacher(self):
        """The frozen float model, or None (e.g. after loading)."""
        return self._teacher_ref.value

    def set_teacher(self, model):
        """Sets the frozen float teacher (not saved with this model)."""
        if model is not None:
            model.trainable = False
        self._teacher_ref.value = model
        # Models built on the old teacher go.
        self._technique_state.value.clear()
        self._feature_models.value.clear()
        self.train_function = None  # a traced step holds the old teacher: trace anew

    # --- The recipe's techniques ---------------------------------------------

    def technique_cache(self, name):
        """A dict where technique `name` keeps its state for this model.

        Techniques are shared by every model built from a recipe, so what
        they build for one model (CSD's teacher feature model, SAM's kernel
        list) lives here; `set_teacher` clears it.
        """
        return self._technique_state.value.setdefault(name, {})

    def _techniques(self):
        return () if self.recipe is None else self.recipe.techniques

    def csd_layer_names(self):
        """The quantized conv layers CSD matches with the teacher, by name.

        Every quantized layer of kind "conv" or "depthwise"
        (`kq.layers.registry`) of this model's own graph whose name is a
        layer of the same Keras type in the teacher, with the same output
        shape. Raises a ValueError naming the layers that
        cannot be matched (`kq.techniques.csd.csd_layer_names`).
        """
        csd = None if self.recipe is None else self.recipe.technique("csd")
        return csd_layer_names(self, None if csd is None else csd.weight)

    def _csd_models(self):
        """`(student, teacher)`: the models CSD's step runs (its feature layers' outputs)."""
        csd = self.recipe.technique("csd")
        return self._feature_model(csd.feature_layers(self)), csd.teacher_features_model(self)

    def _feature_model(self, names):
        """This model with the outputs of layers `names` as a second output (built once)."""
        cache = self._feature_models.value
        key = tuple(names)
        if key not in cache:
            cache[key] = keras.Model(
                self.input, [self.outputs, [self.get_layer(n).output for n in names]]
            )
        return cache[key]

    # --- The training step ---------------------------------------------------

    def _objective(self, x, y, sample_weight, prepared, terms=None):
        """`(y_pred, loss)` of one training forward, the techniques' loss terms included.

        `prepared` maps technique names to what their `prepare` returned.
        `terms`, a dict or None, receives the loss's parts as this replica
        contributes them: "task_loss" (`compute_loss`: the compiled loss
        plus regularization penalties) and each technique's `loss_name`.
        """
        techniques = [t for t in self._techniques() if t.adds_loss]
        wanted = {t.name: list(t.feature_layers(self)) for t in techniques}
        names = list(dict.fromkeys(n for t in techniques for n in wanted[t.name]))
        if names:
            outputs, features = self._feature_model(names)(x, training=True)
            y_pred = outputs[0] if len(outputs) == 1 else outputs
            by_name = dict(zip(names, features))
        else:
            y_pred = self(x, training=True)
            by_name = {}
        extras = []
        for technique in techniques:
            step = TrainingStep(
                x,
                y,
                sample_weight,
                y_pred,
                [by_name[n] for n in wanted[technique.name]],
                prepared.get(technique.name),
            )
            extras.append((technique.loss_name, technique.loss(self, step)))
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        if terms is not None:
            terms[TASK_LOSS] = loss
        # Keras scales each replica's loss by 1/replicas; so are these terms.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for loss_name, extra in extras:
            if extra is None:
                continue
            extra = tf.cast(extra / replicas, loss.dtype)
            loss = loss + extra
            if terms is not None and loss_name is not None:
                terms[loss_name] = extra
        return y_pred, loss

    def _track_loss(self, x, loss, terms=None):
        """Updates the `loss` metric, and `task_loss` and the techniques' terms from `terms`.

        Each replica's value is its share (`1/replicas`) of its batch's mean;
        multiplied back and weighted by the replica's batch size, every
        metric is the mean over all replicas' samples, as Keras' own `loss`.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]
        values = {"loss": loss, **(terms or {})}
        for metric in self.metrics:
            if metric.name in values:
                metric.update_state(values[metric.name] * replicas, sample_weight=batch)

    def train_step(self, data):
        """The recipe's step, after one fused check that the batch inputs are finite.

        `nonfinite_batches="raise"` (the default) stops a step whose inputs
        hold NaN/Inf before any variable changes, and `fit` raises a
        ValueError naming the batch and sample; `"skip"` (also under
        `jit_compile`, where XLA has no assertion) leaves every variable alone
        on such a batch and trains on. Not saved with the model.
        """
        if self.nonfinite_batches == "skip" or self.jit_compile:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            finite, _ = nonfinite.input_finiteness(x)
            return tf.cond(finite, lambda: self._recipe_train_step(data), self.get_metrics_result)
        return self._recipe_train_step(nonfinite.assert_finite(data))

    def _recipe_train_step(self, data):
        techniques = [t for t in self._techniques() if t.adds_loss or t.computes_gradients]
        if not techniques:
            # Explicit super, as written with the tf.cond branch above (nonfinite_batches="skip"),
            # which autograph converts.
            return super(QuantModel, self).train_step(data)  # noqa: UP008
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        trainable = self.trainable_variables
        # Per-step inputs (CSD: the teacher's features), once for both SAM passes.
        prepared = {t.name: t.prepare(self, x, y, sample_weight) for t in techniques}
        terms = {}
        with tf.GradientTape() as tape:
            y_pred, loss = self._objective(x, y, sample_weight, prepared, terms)
            scaled = self.optimizer.scale_loss(loss)
        gradients = None
        for technique in techniques:
            gradients = technique.gradients(
                self,
                tape,
                scaled,
                trainable,
                lambda: self._objective(x, y, sample_weight, prepared)[1],
            )
            if gradients is not None:
                break
        if gradients is None:
            gradients = tape.gradient(scaled, trainable)
        self.optimizer.apply_gradients(zip(gradients, trainable))
        self._track_loss(x, loss, terms)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @property
    def nonfinite_batches(self):
        """What a training batch with NaN/Inf inputs does: "raise" or "skip"."""
        return self._nonfinite_batches

    @nonfinite_batches.setter
    def nonfinite_batches(self, mode):
        self._nonfinite_batches = nonfinite.check_mode(mode)
        self.train_function = None  # the next fit traces the step with the new mode

    @property
    def recipe(self):
        """The `Recipe` this model trains with (None: Keras' own step)."""
        return self._recipe

    @recipe.setter
    def recipe(self, recipe):
        self._recipe = recipe
        # The loss's terms get metrics of their own (`task_loss`, then each
        # technique's `loss_name`), created with the model (so under its
        # distribution strategy's scope).
        names = [t.loss_name for t in getattr(recipe, "techniques", ()) if t.loss_name]
        for name in ([TASK_LOSS] + names) if names else []:
            if getattr(self, f"{name}_tracker", None) is None:
                setattr(self, f"{name}_tracker", keras.metrics.Mean(name=name))
                self._term_names.value.add(name)

    def test_step(self, data):
        """Keras' `test_step`, without the training-only terms (`task_loss`, `csd_loss`)."""
        logs = super().test_step(data)
        hidden = self._term_names.value
        return {name: value for name, value in logs.items() if name not in hidden}

    # --- fit, evaluate, predict ----------------------------------------------

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, plus the state QAT needs, set from the training data.

        Before training, input quantizers that never saw data initialise
        from the first training batch. During and after training,
        `BatchNormRecalibration` re-estimates the BatchNorm statistics
        (before each validation and at the end), unless `batchnorm_samples`
        is 0 or the callbacks hold one already; then `Int32BiasRounding`
        puts the biases on their int32 grid, unless `int32_biases` is False
        or the callbacks hold one already.

        Training inputs with NaN/Inf raise a ValueError naming where they
        are (an array's sample before training starts; a dataset's epoch,
        batch and sample when the step meets it), and nothing is written
        into the model; see `train_step` for `nonfinite_batches="skip"`.
        """
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        data = self._training_inputs(arguments)
        batch_size = arguments.get("batch_size") or 32
        raising = self.nonfinite_batches == "raise"
        if not raising and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(
                "nonfinite_batches='skip' runs one replica's step inside a condition; under "
                f"{tf.distribute.get_strategy().num_replicas_in_sync} replicas it is not "
                "supported. Received: nonfinite_batches='skip'. Fix: use 'raise' (the default)."
            )
        if raising and hasattr(arguments.get("x"), "shape"):
            validation.finite_array(arguments["x"], "x")
        if data is not None:
            first = next(
                (
                    b
                    for b in input_batches(data, batch_size, what="x", check_finite=raising)
                    if validation.non_finite_position(b) is None
                ),
                None,
            )
            if first is not None:
                initialize_activation_steps(self, first)
        callbacks = list(arguments.get("callbacks") or [])
        if (
            self.batchnorm_samples
            and batchnorm_layers(self)
            and not any(isinstance(c, BatchNormRecalibration) for c in callbacks)
        ):
            if data is None:
                raise ValueError(
                    f"Model '{self.name}' re-estimates its BatchNorm statistics from the "
                    "training data after training, so it reads that data again; it can "
                    "re-read an array, a tf.data.Dataset or a keras.utils.PyDataset, but "
                    f"received x of type {type(arguments.get('x')).__name__} (a generator "
                    "can be read only once). Fix: pass one of those; or set "
                    "model.batchnorm_samples = 0 and call "
                    "kq.recalibrate_batchnorm(model, data) after fit."
                )
            callbacks.append(
                BatchNormRecalibration(
                    data, num_samples=self.batchnorm_samples, batch_size=batch_size
                )
            )
        if self.int32_biases and not any(isinstance(c, Int32BiasRounding) for c in callbacks):
            callbacks.append(Int32BiasRounding())  # after the BatchNorm statistics it folds
        tracker = nonfinite.BatchTracker()
        arguments["callbacks"] = callbacks + [tracker]
        try:
            return super().fit(**arguments)
        except tf.errors.InvalidArgumentError as error:
            converted = nonfinite.error_from(error, tracker.epoch, tracker.batch)
            if converted is None:
                raise
            raise converted from None

    @staticmethod
    def _training_inputs(arguments):
        """The inputs `fit` trains on, in a form that can be read again (or None)."""
        x = arguments.get("x")
        if hasattr(x, "shape"):
            split = arguments.get("validation_split") or 0.0
            return x[: int(len(x) * (1.0 - split))] if split else x
        if isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)):
            return x
        return None

    def evaluate(self, *args, **kwargs):
        self.check_initialized("evaluate")
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.check_initialized("predict")
        return super().predict(*args, **kwargs)

    def check_initialized(self, action):
        """Raises when a quantizer never saw data (its step is a placeholder)."""
        check_initialized(self, action)

    def get_config(self):
        config = super().get_config()
        config["recipe"] = None if self.recipe is None else self.recipe.get_config()
        config["batchnorm_samples"] = self.batchnorm_samples
        config["int32_biases"] = self.int32_biases
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        recipe = config.pop("recipe", None)
        batchnorm_samples = config.pop("batchnorm_samples", 2048)
        int32_biases = config.pop("int32_biases", True)
        model = super().from_config(config, custom_objects=custom_objects)
        model.recipe = None if recipe is None else Recipe.from_config(recipe)
        model.batchnorm_samples = batchnorm_samples
        model.int32_biases = int32_biases
        return model
