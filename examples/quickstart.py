"""The offline demo (`make demo`): the main job on the bundled digits data.

    python examples/quickstart.py --out_dir runs/demo [--recipe fpq] [--fast]

The same pipeline as `examples/train_cifar.py`, offline, in a few minutes on
2 CPU cores: float training of a small CNN (Conv+BN+ReLU, depthwise, a
residual Add, pooling, Dense), QAT at W4A4 with the recipe, int8 TFLite and
ONNX export verified in LiteRT and onnxruntime, the Edge TPU check, and the
robustness report with plots. `--out_dir` then holds `float.keras`,
`qat.keras`, `model_int8.tflite`, `model.onnx`, `verification.md`,
`edgetpu.md`, `report/` and `summary.json`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kqrobust.pipeline import JobConfig  # noqa: E402
from kqrobust.pipeline import run_job  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="runs/demo", help="where models and reports go")
    parser.add_argument("--recipe", default="fpq", help="QAT recipe (a preset name)")
    parser.add_argument("--weight_bits", type=int, default=4, help="weight bits (2..8)")
    parser.add_argument("--activation_bits", type=int, default=4, help="activation bits (2..8)")
    parser.add_argument(
        "--fast", action="store_true", help="one epoch each and a few steps (the CI smoke test)"
    )
    args = parser.parse_args(argv)
    fast = dict(float_epochs=1, qat_epochs=1, steps_per_epoch=3) if args.fast else {}
    config = JobConfig(
        dataset="digits",
        model="small_cnn",
        recipe=args.recipe,
        weight_bits=args.weight_bits,
        activation_bits=args.activation_bits,
        out_dir=args.out_dir,
        **fast,
    )
    return run_job(config)


if __name__ == "__main__":
    main()
