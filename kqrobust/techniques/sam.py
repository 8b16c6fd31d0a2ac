"""SAM and ASAM: the two-pass sharpness-aware gradient, as a recipe technique.

The pure helpers (`perturbed_variables`, `sam_perturbation`,
`all_reduce_gradients`) and `SAMTechnique.gradients`, the step
`kq.training.QuantModel` runs when a recipe holds this technique.

Formulas: docs/methods.md#sam-and-asam.
"""

import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import check_nonnegative
from kqrobust.techniques.base import register_technique

SAM_METHODS = ("sam", "asam")
# Default radius per method: SAM 0.05 (Foret et al., ICLR 2021), ASAM 0.5
# (Kwon et al., ICML 2021, CIFAR-10).
DEFAULT_RHO = {"sam": 0.05, "asam": 0.5}


def perturbed_variables(model):
    """The kernels (SAM/ASAM) perturb: every trainable `kernel` of a layer.

    Biases, BatchNorm parameters and quantizer steps are not perturbed (the
    papers leave the choice; ASAM's alternative is `T = 1` for them), and the
    gradient norm in the perturbation is taken over the kernels only.
    """
    seen, kernels = set(), []
    for layer in model_graph.flat_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not getattr(kernel, "trainable", False):
            continue
        if id(kernel) not in seen:
            seen.add(id(kernel))
            kernels.append(kernel)
    return kernels


def sam_perturbation(gradients, weights, rho, adaptive=False, eta=0.01, epsilon=1e-12):
    """The perturbation `e` of SAM or ASAM.

    - SAM: `e = rho * g / ||g||`.
    - ASAM: `e = rho * T^2 g / ||T g||`, with `T = |w| + eta` elementwise.
    The norms are over all tensors together; `epsilon` guards `||.|| = 0`.

    Args:
        gradients: the gradients `g`, one per weight (None counts as zero).
        weights: the weights `w` (tensors or variables).
        rho: the radius.
        adaptive: ASAM when True.
        eta: ASAM's offset.
        epsilon: added to the norm.

    Returns:
        A list of float32 tensors shaped like `weights`.

    References:
        Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
        Generalization", ICLR 2021, eq. 2; Kwon et al., "ASAM: Adaptive
        Sharpness-Aware Minimization for Scale-Invariant Learning of Deep
        Neural Networks", ICML 2021, eq. 7 (with `T_w = |w| + eta`).
    """
    grads = [
        tf.zeros(w.shape, "float32") if g is None else tf.cast(g, "float32")
        for g, w in zip(gradients, weights)
    ]
    if adaptive:
        scales = [tf.abs(tf.cast(tf.convert_to_tensor(w), "float32")) + eta for w in weights]
        scaled = [t * g for t, g in zip(scales, grads)]
        norm = tf.linalg.global_norm(scaled) + epsilon
        return [rho * t * sg / norm for t, sg in zip(scales, scaled)]
    norm = tf.linalg.global_norm(grads) + epsilon
    return [rho * g / norm for g in grads]


def all_reduce_gradients(gradients):
    """Sums `gradients` over the replicas of the current strategy.

    Called in replica context (inside `train_step` under a strategy). Keras
    scales each replica's loss by `1 / num_replicas`, so the sum is the
    gradient of the global batch: every replica then perturbs alike.
    Outside a multi-replica strategy it returns `gradients` unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return gradients
    present = [i for i, g in enumerate(gradients) if g is not None]
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
    out = list(gradients)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def state_restored_after_sam(model):
    """Non-trainable variables but the noise generators' (SFP draws anew each pass)."""
    noise = {
        id(v)
        for layer in model_graph.flat_layers(model)
        for v in getattr(layer, "input_perturbation_variables", ())
    }
    return [v for v in model.non_trainable_variables if id(v) not in noise]


@register_technique
class SAMTechnique(Technique):
    """Sharpness-aware training step: SAM or ASAM.

    `g = grad L(w)`; the kernels (only: biases, BatchNorm and quantizer
    steps are not perturbed, and `||g||` is over the kernels) move by `e`
    (`sam_perturbation`); `g' = grad L(w + e)` for every trainable variable;
    the kernels are restored exactly (assigned their saved values) and the
    optimizer applies `g'`. The non-trainable state (BatchNorm moving
    statistics, quantizer init flags, EMA ranges) is restored after the
    second pass, so the first pass alone updates it; SFP's noise generators
    are not, so no noise is drawn twice. Under a `tf.distribute` strategy `g`
    is all-reduced before the perturbation, so every replica perturbs alike.
    Recipe keywords: `sam="sam"|"asam"`, `rho`, `eta`.

    Args:
        method: `"sam"` or `"asam"`.
        rho: the radius, a float > 0; None takes 0.05 for SAM and 0.5 for
            ASAM.
        eta: ASAM's `T = |w| + eta`, a float >= 0.

    References:
        Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
        Generalization", ICLR 2021, eq. 2; Kwon et al., "ASAM", ICML 2021,
        eq. 7.
    """

    name = "sam"
    order = 40
    fields = {"sam": None, "rho": None, "eta": 0.01}

    def __init__(self, method="sam", rho=None, eta=0.01):
        if method not in SAM_METHODS:
            raise ValueError(f"sam must be None, 'sam' or 'asam'. Received: sam={method!r}")
        self.method = method
        self.rho = validation.positive(
            DEFAULT_RHO[method] if rho is None else rho,
            "rho",
            fix=f"pass a float > 0, or None for the default of sam={method!r} "
            f"({DEFAULT_RHO[method]}).",
        )
        self.eta = check_nonnegative(eta, "eta", allow_none=False)

    @classmethod
    def from_fields(cls, sam=None, rho=None, eta=0.01):
        rho = check_nonnegative(rho, "rho")
        eta = check_nonnegative(eta, "eta", allow_none=False)
        return None if sam is None else cls(sam, rho, eta)

    def to_fields(self):
        return {"sam": self.method, "rho": self.rho, "eta": self.eta}

    def gradients(self, model, tape, scaled_loss, variables, objective):
        """`g' = grad L(w + e)`, with the kernels and the state restored afterwards."""
        cache = model.technique_cache(self.name)
        if "kernels" not in cache:
            cache["kernels"] = perturbed_variables(model)
        kernels = cache["kernels"]
        gradients = all_reduce_gradients(tape.gradient(scaled_loss, kernels))
        perturbation = sam_perturbation(
            gradients, kernels, self.rho, adaptive=self.method == "asam", eta=self.eta
        )
        saved = [tf.identity(k.value) for k in kernels]
        restored = state_restored_after_sam(model)
        state = [tf.identity(v.value) for v in restored]
        for kernel, w, e in zip(kernels, saved, perturbation):
            kernel.assign(w + tf.cast(e, w.dtype))
        with tf.GradientTape() as tape2:
            loss = objective()
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape2.gradient(scaled, variables)
        for kernel, w in zip(kernels, saved):
            kernel.assign(w)
        for variable, value in zip(restored, state):
            variable.assign(value)
        return gradients

    def get_config(self):
        return {"method": self.method, "rho": self.rho, "eta": self.eta}
