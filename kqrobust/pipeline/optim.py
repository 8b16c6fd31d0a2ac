"""The papers' optimisation setup: SGD with momentum, cosine schedule, weight decay."""

import keras

# Weight decay of LSQ QAT by weight bit-width (Esser et al. 2020, sec. 3;
# METHODS.md sec. 1); float training and 8-bit use the 4-bit value.
LSQ_WEIGHT_DECAY = {2: 2.5e-5, 3: 5e-5, 4: 1e-4}
FPQ_WEIGHT_DECAY = 5e-4  # Pang & Cai, CIFAR setup (METHODS.md sec. 5)
# Not decayed: quantizer steps and offsets, BatchNorm, biases.
NO_DECAY_NAMES = ("_step", "_offset", "gamma", "beta", "bias")


def default_weight_decay(recipe_name, weight_bits):
    """The paper's weight decay for `recipe_name` at `weight_bits`."""
    if recipe_name == "fpq":
        return FPQ_WEIGHT_DECAY
    return LSQ_WEIGHT_DECAY.get(weight_bits, 1e-4 if weight_bits > 4 else 2.5e-5)


def paper_optimizer(learning_rate, epochs, steps_per_epoch, weight_decay,
                    optimizer="sgd", momentum=0.9):
    """SGD (momentum 0.9) or Adam with a cosine-decayed learning rate.

    Weight decay is decoupled (Keras' `weight_decay`) and skips quantizer
    steps, BatchNorm parameters and biases.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps_per_epoch))
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay or None)
    elif optimizer == "adam":
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay or 0.0)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam'. Received: optimizer={optimizer!r}")
    if weight_decay:
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return opt
