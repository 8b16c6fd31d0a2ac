"""Float training, QAT with a kqrobust recipe, evaluation, int8 export and reports on CIFAR.

On a GPU/TPU machine with internet:

    python examples/train_cifar.py --dataset=cifar10 --model=resnet18 --recipe=fpq \
        --weight_bits=4 --activation_bits=4 --download

Defaults follow the papers' CIFAR setup (LSQ, ICLR 2020; FPQ, arXiv:2503.11159): SGD with
momentum 0.9 and a cosine schedule, QAT learning rate 0.01, 200 epochs, the
recipe's weight decay, first and last layers at 8 bits. Pass
`--float_checkpoint=float.keras` to skip float training. `--strategy=auto`
picks a TPU, then all GPUs (MirroredStrategy), then one device;
`--batch_size` is per replica and learning rates scale linearly with the
global batch (reference 128). Offline, `--dataset=digits` runs the same
pipeline on the bundled data (that is what `make demo` does).
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kqrobust.pipeline import JobConfig  # noqa: E402
from kqrobust.pipeline import TrainingDivergedError  # noqa: E402
from kqrobust.pipeline import run_job  # noqa: E402

CIFAR_DEFAULTS = dict(
    dataset="cifar10",
    model="resnet18",
    recipe="fpq",
    float_epochs=200,
    qat_epochs=200,
    batch_size=128,
    learning_rate=0.1,
    qat_learning_rate=0.01,
    out_dir="runs/cifar",
    backup_every=500,
)

_DEFINE = {
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
    bool: flags.DEFINE_bool,
}
for _field in dataclasses.fields(JobConfig):
    _DEFINE[_field.type](
        _field.name, CIFAR_DEFAULTS.get(_field.name, _field.default), _field.metadata["help"]
    )
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = JobConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(JobConfig)})
    try:
        summary = run_job(config)
    except TrainingDivergedError as error:
        raise SystemExit(f"train_cifar.py: {error}") from error
    print({k: v for k, v in summary.items() if k != "config"})


if __name__ == "__main__":
    app.run(main)
