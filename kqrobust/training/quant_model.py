"""`QuantModel`: the one keras.Model subclass whose train_step recipes extend."""

import inspect

import keras
import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.api_export import kqrobust_export
from kqrobust.callbacks.batchnorm_recalibration import BatchNormRecalibration
from kqrobust.configs.recipe import Recipe
from kqrobust.configs.recipe import get_recipe
from kqrobust import quantization_summary
from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry
from kqrobust.layers import check_initialized
from kqrobust.recalibration import batchnorm_layers
from kqrobust.recalibration import initialize_activation_steps
from kqrobust.recalibration import input_batches
from kqrobust.training import nonfinite
from kqrobust.training import sam as sam_lib
from kqrobust.training.csd import csd_loss
from kqrobust.training.teacher import TeacherRef


class _Extractors:
    """Feature models of CSD, held outside Keras' attribute tracking."""

    def __init__(self):
        self.student = None
        self.teacher = None
        self.names = None
        self.kernels = None


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
    samples each time, 0 turns it off). `predict`, `evaluate` and export
    refuse a model whose activation steps never saw data.

    `train_step` follows the recipe; without `sam` and `csd_weight` it is
    Keras' own step (SatNL, SymReg, KURE and SFP live in the layers).

    - SAM / ASAM (`recipe.sam`; Foret et al., ICLR 2021, eq. 2; Kwon et al.,
      ICML 2021, eq. 7): `g = grad L(w)`; the
      kernels (only: biases, BatchNorm and quantizer steps are not
      perturbed, and `||g||` is over the kernels) move by `e = rho g/||g||`
      (SAM) or `e = rho T^2 g/||T g||`, `T = |w| + eta` (ASAM); `g' = grad
      L(w + e)` for *every* trainable variable; the kernels are restored
      exactly (assigned their saved values) and the optimizer applies `g'`.
      The non-trainable state (BatchNorm moving statistics, quantizer init
      flags, EMA ranges) is restored after the second pass, so it is updated
      once per step, by the first pass; SFP's noise generators are not, so
      no noise is drawn twice. Under a `tf.distribute` strategy `g`
      is all-reduced (summed: Keras scales each replica's loss by
      `1/replicas`) before the perturbation, so every replica perturbs alike;
      the optimizer all-reduces `g'` as usual. The reported loss and metrics
      are those of the first (unperturbed) pass.
    - CSD (`recipe.csd_weight`, FPQ): one inference-mode forward of the
      frozen teacher per step; for every quantized conv layer the student's
      output and the teacher's layer of the same name are standardised per
      channel and `csd_weight * csd_loss` joins the loss (see
      `kqrobust.training.csd`). The matched layers are `csd_layer_names()`.
      Under a `tf.distribute` strategy the channel statistics are each
      replica's (over its share of the batch), as BatchNorm's are.

    Logged values with CSD (Keras' convention: `loss` is what the optimizer
    minimises): `loss = task_loss + csd_loss`; `task_loss` is the compiled
    loss (the cross-entropy) plus any regularization penalties (SymReg, KURE),
    i.e. what `val_loss` measures, and `csd_loss` is `csd_weight * L_CSD`.
    Summed over channels and layers, `csd_loss` can be large (tens) while the
    cross-entropy is small. Both are training-only: `evaluate` reports neither.
    """

    def __init__(self, *args, recipe=None, batchnorm_samples=2048, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = None if recipe is None else get_recipe(recipe)
        self.batchnorm_samples = batchnorm_samples
        self.nonfinite_batches = "raise"
        self._teacher_ref = TeacherRef()
        self._extractors = _Extractors()

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
        return self._teacher_ref.model

    def set_teacher(self, model):
        """Sets the frozen float teacher (not saved with this model)."""
        if model is not None:
            model.trainable = False
        self._teacher_ref.model = model
        self._extractors.teacher = None

    # --- FPQ's CSD -----------------------------------------------------------

    def csd_layer_names(self):
        """The quantized conv layers CSD matches with the teacher, by name.

        Every quantized layer of kind "conv" or "depthwise"
        (`kq.layers.registry`) of this model's own graph whose name is a
        layer of the same Keras type in the teacher, with the same output
        shape. Raises a ValueError naming the layers that
        cannot be matched.
        """
        teacher = self.teacher
        if teacher is None:
            raise ValueError(
                f"Recipe '{self.recipe.name}' distils (csd_weight="
                f"{self.recipe.csd_weight}) from the frozen float teacher, but model "
                f"'{self.name}' has none (the teacher is not saved with the model). "
                "Fix: call qmodel.set_teacher(float_model) before fit.")
        convs = [layer for layer in registry.layers_of_kind(self.layers, "conv", "depthwise")
                 if isinstance(layer, QuantizeMixin)]
        names = [layer.name for layer in convs]
        if not names:
            raise ValueError(
                f"CSD needs quantized conv layers in the top-level graph of '{self.name}', "
                "found none (layers inside nested models are not matched). Fix: "
                "flatten the model, or set csd_weight=None.")
        teacher_layers = {layer.name: layer for layer in teacher.layers}
        bad = [layer.name for layer in convs
               if type(teacher_layers.get(layer.name)) is not registry.layer_type_of(layer).keras_class
               or tuple(teacher_layers[layer.name].output.shape) != tuple(layer.output.shape)]
        if bad:
            raise ValueError(
                f"CSD matches student and teacher conv layers by name; these student "
                f"layers have no teacher conv layer of the same name and output shape: "
                f"{bad}. Teacher conv layers: "
                f"{[l.name for l in registry.layers_of_kind(teacher.layers, 'conv', 'depthwise')]}. "
                "Fix: set_teacher() the float model this one was quantized from.")
        return names

    def _csd_models(self):
        cache = self._extractors
        if cache.student is None or cache.teacher is None:
            names = self.csd_layer_names()
            cache.student = keras.Model(
                self.input, [self.outputs, [self.get_layer(n).output for n in names]])
            cache.teacher = keras.Model(
                self.teacher.input, [self.teacher.get_layer(n).output for n in names])
            cache.names = names
        return cache.student, cache.teacher

    # --- The training step ---------------------------------------------------

    def _objective(self, x, y, sample_weight, teacher_features, terms=None):
        """`(y_pred, loss)` of one training forward (CSD included).

        `terms`, a dict or None, receives the loss's two parts as this
        replica contributes them: "task_loss" (`compute_loss`: the compiled
        loss plus regularization penalties) and "csd_loss".
        """
        if teacher_features is None:
            y_pred = self(x, training=True)
            extra = None
        else:
            student, _ = self._csd_models()
            outputs, features = student(x, training=True)
            y_pred = outputs[0] if len(outputs) == 1 else outputs
            extra = self.recipe.csd_weight * csd_loss(features, teacher_features)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=True)
        if terms is not None:
            terms["task_loss"] = loss
        if extra is not None:
            # Keras scales each replica's loss by 1/replicas; so is this term.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            extra = tf.cast(extra / replicas, loss.dtype)
            loss = loss + extra
            if terms is not None:
                terms["csd_loss"] = extra
        return y_pred, loss

    def _track_loss(self, x, loss, terms=None):
        """Updates the `loss` metric, and `task_loss` / `csd_loss` from `terms`.

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
            return tf.cond(finite, lambda: self._recipe_train_step(data),
                           self.get_metrics_result)
        return self._recipe_train_step(nonfinite.assert_finite(data))

    def _recipe_train_step(self, data):
        recipe = self.recipe
        if recipe is None or (recipe.sam is None and recipe.csd_weight is None):
            return super(QuantModel, self).train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        trainable = self.trainable_variables
        teacher_features = None
        if recipe.csd_weight is not None:
            _, teacher = self._csd_models()
            teacher_features = teacher(x, training=False)
        terms = {}
        with tf.GradientTape() as tape:
            y_pred, loss = self._objective(x, y, sample_weight, teacher_features, terms)
            scaled = self.optimizer.scale_loss(loss)
        if recipe.sam is None:
            gradients = tape.gradient(scaled, trainable)
        else:
            gradients = self._sam_gradients(tape, scaled, trainable, x, y, sample_weight,
                                            teacher_features)
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
        # With CSD, the loss's two terms get metrics of their own, created
        # with the model (so under its distribution strategy's scope).
        if (recipe is not None and recipe.csd_weight is not None
                and getattr(self, "csd_loss_tracker", None) is None):
            self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
            self.csd_loss_tracker = keras.metrics.Mean(name="csd_loss")

    def test_step(self, data):
        """Keras' `test_step`, without the training-only `task_loss` / `csd_loss`."""
        logs = super().test_step(data)
        return {name: value for name, value in logs.items()
                if name not in ("task_loss", "csd_loss")}

    def _sam_gradients(self, tape, scaled, trainable, x, y, sample_weight,
                       teacher_features):
        """`g' = grad L(w + e)` with the state restored afterwards."""
        recipe = self.recipe
        if self._extractors.kernels is None:
            self._extractors.kernels = sam_lib.perturbed_variables(self)
        kernels = self._extractors.kernels
        gradients = sam_lib.all_reduce_gradients(tape.gradient(scaled, kernels))
        perturbation = sam_lib.sam_perturbation(
            gradients, kernels, recipe.rho, adaptive=recipe.sam == "asam", eta=recipe.eta)
        saved = [tf.identity(k.value) for k in kernels]
        restored = self._state_restored_after_sam()
        state = [tf.identity(v.value) for v in restored]
        for kernel, w, e in zip(kernels, saved, perturbation):
            kernel.assign(w + tf.cast(e, w.dtype))
        with tf.GradientTape() as tape2:
            _, loss = self._objective(x, y, sample_weight, teacher_features)
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape2.gradient(scaled, trainable)
        for kernel, w in zip(kernels, saved):
            kernel.assign(w)
        for variable, value in zip(restored, state):
            variable.assign(value)
        return gradients

    def _state_restored_after_sam(self):
        """Non-trainable variables but the noise generators' (SFP draws anew each pass)."""
        noise = {id(v) for layer in model_graph.flat_layers(self)
                 for v in getattr(layer, "input_perturbation_variables", ())}
        return [v for v in self.non_trainable_variables if id(v) not in noise]

    # --- fit, evaluate, predict ----------------------------------------------

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, plus the state QAT needs, set from the training data.

        Before training, input quantizers that never saw data initialise
        from the first training batch. During and after training,
        `BatchNormRecalibration` re-estimates the BatchNorm statistics
        (before each validation and at the end), unless `batchnorm_samples`
        is 0 or the callbacks hold one already.

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
                "supported. Received: nonfinite_batches='skip'. Fix: use 'raise' (the default).")
        if raising and hasattr(arguments.get("x"), "shape"):
            validation.finite_array(arguments["x"], "x")
        if data is not None:
            first = next((b for b in input_batches(data, batch_size, what="x",
                                                   check_finite=raising)
                          if validation.non_finite_position(b) is None), None)
            if first is not None:
                initialize_activation_steps(self, first)
        callbacks = list(arguments.get("callbacks") or [])
        if (self.batchnorm_samples and batchnorm_layers(self)
                and not any(isinstance(c, BatchNormRecalibration) for c in callbacks)):
            if data is None:
                raise ValueError(
                    f"Model '{self.name}' re-estimates its BatchNorm statistics from the "
                    "training data after training, so it reads that data again; it can "
                    "re-read an array, a tf.data.Dataset or a keras.utils.PyDataset, but "
                    f"received x of type {type(arguments.get('x')).__name__} (a generator "
                    "can be read only once). Fix: pass one of those; or set "
                    "model.batchnorm_samples = 0 and call "
                    "kq.recalibrate_batchnorm(model, data) after fit.")
            callbacks.append(BatchNormRecalibration(
                data, num_samples=self.batchnorm_samples, batch_size=batch_size))
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
            return x[:int(len(x) * (1.0 - split))] if split else x
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
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        recipe = config.pop("recipe", None)
        batchnorm_samples = config.pop("batchnorm_samples", 2048)
        model = super().from_config(config, custom_objects=custom_objects)
        model.recipe = None if recipe is None else Recipe.from_config(recipe)
        model.batchnorm_samples = batchnorm_samples
        return model
