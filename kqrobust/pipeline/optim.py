"""The papers' optimisation setup: SGD with momentum, cosine schedule, weight decay."""

import keras

from kqrobust import validation
from kqrobust.configs.recipe import get_recipe
from kqrobust.training.optimizers import NO_DECAY_NAMES
from kqrobust.training.optimizers import SGDWithL2

# Weight decay of LSQ QAT by weight bit-width (Esser et al., "Learned Step
# Size Quantization", ICLR 2020, sec. 3); float training and 8-bit use the
# 4-bit value.
LSQ_WEIGHT_DECAY = {2: 2.5e-5, 3: 5e-5, 4: 1e-4}


def default_weight_decay(recipe, weight_bits):
    """The paper's weight decay for `recipe` (a preset name or `Recipe`) at `weight_bits`.

    A technique whose paper trains with its own weight decay
    (`Technique.paper_weight_decay`: FPQ's SFP and CSD, 5e-4) sets it (the
    largest, if several do); otherwise LSQ's, by bit-width.
    """
    own = [
        t.paper_weight_decay
        for t in get_recipe(recipe).techniques
        if t.paper_weight_decay is not None
    ]
    if own:
        return max(own)
    return LSQ_WEIGHT_DECAY.get(weight_bits, 1e-4 if weight_bits > 4 else 2.5e-5)


def paper_optimizer(
    learning_rate, epochs, steps_per_epoch, weight_decay, optimizer="sgd", momentum=0.9
):
    """SGD (momentum 0.9) or Adam with a cosine-decayed learning rate.

    - "sgd": `SGDWithL2`. The weight decay is the papers' coupled L2 term:
      `g <- g + weight_decay * w` before the momentum update (PyTorch's SGD
      `weight_decay`, which the papers' values assume).
    - "adam": Keras' `AdamW`, whose weight decay is decoupled
      (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019).

    Neither decays quantizer steps and offsets, BatchNorm parameters or biases.
    """
    validation.one_of(optimizer, "optimizer", ("sgd", "adam"), in_words=True)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps_per_epoch)
    )
    if optimizer == "sgd":
        return SGDWithL2(schedule, momentum=momentum, l2=weight_decay or 0.0)
    if optimizer == "adam":
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay or 0.0)
        if weight_decay:
            opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
        return opt
