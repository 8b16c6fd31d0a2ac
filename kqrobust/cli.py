"""The `kqrobust` command: `train`, `evaluate` and `export` over the library.

    kqrobust train --dataset=digits --recipe=lsq --weight_bits=4 --out_dir=runs/x
    kqrobust evaluate runs/x/qat.keras --dataset=digits
    kqrobust export runs/x/qat.keras --tflite=runs/x/model.tflite --onnx=runs/x/model.onnx

`kqrobust SUBCOMMAND --help` documents every flag.
"""

import argparse
import dataclasses
import json
import sys

# Importing kqrobust (below) loads TensorFlow; for this command the package sets
# TF_CPP_MIN_LOG_LEVEL=3 first, unless the user set a level (kqrobust/__init__.py).
from kqrobust import export_command


def _add_job_flags(parser):
    from kqrobust.pipeline import JobConfig

    for field in dataclasses.fields(JobConfig):
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if field.type is bool:
            parser.add_argument(
                f"--{field.name}",
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{field.name}", type=field.type, default=field.default, help=help_text
            )


def _train(args):
    from kqrobust.pipeline import JobConfig
    from kqrobust.pipeline import TrainingDivergedError
    from kqrobust.pipeline import run_job

    config = JobConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(JobConfig)})
    try:
        summary = run_job(config)
    except TrainingDivergedError as error:
        raise SystemExit(f"kqrobust train: {error}") from error
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


def _evaluation_data(args):
    from kqrobust.pipeline.data import load_job_data

    data = load_job_data(args.dataset, args.batch_size, args.data_dir)
    return data


def _evaluate(args):
    import keras

    from kqrobust.saving import load_model

    data = _evaluation_data(args)
    model = load_model(args.model_path)
    x, y = data.test_arrays
    if not model.compiled:
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    print(json.dumps({"model": args.model_path, "dataset": args.dataset, **result}, indent=2))


def build_parser():
    parser = argparse.ArgumentParser(prog="kqrobust", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="float training, QAT, evaluation, export and reports")
    _add_job_flags(train)
    train.set_defaults(run=_train)
    evaluate = sub.add_parser("evaluate", help="test accuracy of a saved .keras model")
    evaluate.add_argument("model_path", help="a saved .keras model")
    evaluate.add_argument("--dataset", default="digits", help="digits, cifar10 or cifar100")
    evaluate.add_argument("--data_dir", default=None, help="directory of prepared TFDS data")
    evaluate.add_argument("--batch_size", type=int, default=128, help="evaluation batch size")
    evaluate.set_defaults(run=_evaluate)
    export = sub.add_parser(
        "export",
        parents=[export_command.build_parser(add_help=False)],
        help="export a .keras model to int8 TFLite/ONNX, verify it, check the Edge TPU rules",
    )
    export.set_defaults(run=export_command.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
