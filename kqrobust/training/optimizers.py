"""SGD with the papers' weight decay: an L2 term whose gradient goes through momentum."""

import keras
from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export

# Not decayed: quantizer steps and offsets, BatchNorm's gamma and beta, biases
# (matched as substrings of a variable's name, like Keras' `var_names`).
NO_DECAY_NAMES = ("_step", "_offset", "gamma", "beta", "bias")


@kqrobust_export
class SGDWithL2(keras.optimizers.SGD):
    """SGD (with momentum) whose weight decay is coupled L2, as the papers train.

    For every variable whose name contains none of `exclude_names`:

        g <- g + l2 * w
        v <- momentum * v - lr * g
        w <- w + v

    (Nesterov as in `keras.optimizers.SGD`). This is `torch.optim.SGD`'s
    `weight_decay`, the setting of the papers' numbers: LSQ's 1e-4 / 5e-5 /
    2.5e-5 at 4 / 3 / 2 bits (Esser et al., "Learned Step Size
    Quantization", ICLR 2020, sec. 3) and FPQ's 5e-4 (Pang & Cai,
    "Stabilizing Quantization-Aware Training by Implicit-Regularization on
    Hessian Matrix", arXiv 2503.11159). Keras' own `weight_decay` is
    decoupled (`w <- w - lr * wd * w`, outside momentum): with momentum 0.9
    the same value decays about 10x less at steady state.

    The L2 term is added to the gradient after Keras has all-reduced it, so
    under a `tf.distribute` strategy it is counted once, not once per replica.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        momentum: a float in [0, 1].
        nesterov: Nesterov momentum.
        l2: the L2 coefficient, a float >= 0 (0: plain SGD).
        exclude_names: variables whose name contains any of these strings
            are not decayed (default: quantizer steps and offsets, BatchNorm
            gamma and beta, biases).
        **kwargs: the other arguments of `keras.optimizers.SGD`, except
            `weight_decay` (use `l2`).

    Example:
        >>> opt = kq.training.SGDWithL2(0.01, momentum=0.9, l2=5e-4)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        l2=0.0,
        exclude_names=NO_DECAY_NAMES,
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "SGDWithL2 decays through its `l2` argument (coupled, through momentum); "
                f"it does not take Keras' decoupled weight_decay. Received: "
                f"weight_decay={kwargs['weight_decay']!r}. Fix: pass l2=... instead."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        validation.non_negative(l2, "l2", kind="float")
        if isinstance(exclude_names, str) or not all(isinstance(n, str) for n in exclude_names):
            raise ValueError(
                "exclude_names must be a list of strings (parts of variable names). "
                f"Received: exclude_names={exclude_names!r}"
            )
        self.l2 = float(l2)
        self.exclude_names = tuple(exclude_names)

    def decays(self, variable):
        """Whether `variable` gets the L2 term (its name has no excluded part)."""
        name = variable.name
        return not any(part in name for part in self.exclude_names)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self.decays(variable):
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.l2, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update({"l2": self.l2, "exclude_names": list(self.exclude_names)})
        return config
