"""Pure helpers of SAM and ASAM: which weights to perturb and by how much.

The two-pass step itself lives in `QuantModel.train_step`.
"""

import tensorflow as tf

from kqrobust import model_graph


def perturbed_variables(model):
    """The kernels (SAM/ASAM) perturb: every trainable `kernel` of a layer.

    Biases, BatchNorm parameters and quantizer steps are not perturbed
    (METHODS.md sec. 6 leaves the choice; this is it), and the gradient norm
    in the perturbation is taken over the kernels only.
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
    """The perturbation `e` of SAM or ASAM (METHODS.md sec. 6).

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
        Foret et al., "Sharpness-Aware Minimization", ICLR 2021, eq. 2;
        Kwon et al., "ASAM", ICML 2021, eq. 7 (with `T_w = |w| + eta`).
    """
    grads = [tf.zeros(w.shape, "float32") if g is None else tf.cast(g, "float32")
             for g, w in zip(gradients, weights)]
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
