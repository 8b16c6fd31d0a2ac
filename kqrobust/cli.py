"""The `kqrobust` command: `train`, `evaluate` and `export` over the library.

    kqrobust train --dataset=digits --recipe=lsq --weight_bits=4 --out_dir=runs/x
    kqrobust evaluate runs/x/qat.keras --dataset=digits
    kqrobust export runs/x/qat.keras --tflite=runs/x/model.tflite --onnx=runs/x/model.onnx

`kqrobust SUBCOMMAND --help` documents every flag.
"""

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _add_job_flags(parser):
    from kqrobust.pipeline import JobConfig

    for field in dataclasses.fields(JobConfig):
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if field.type is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction,
                                default=field.default, help=help_text)
        else:
            parser.add_argument(f"--{field.name}", type=field.type, default=field.default,
                                help=help_text)


def _train(args):
    from kqrobust.pipeline import JobConfig
    from kqrobust.pipeline import run_job

    config = JobConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(JobConfig)})
    summary = run_job(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


def _evaluation_data(args):
    from kqrobust.pipeline.data import load_job_data

    data = load_job_data(args.dataset, args.batch_size, args.data_dir)
    return data


def _evaluate(args):
    import keras

    data = _evaluation_data(args)
    model = keras.models.load_model(args.model_path)
    x, y = data.test_arrays
    if not model.compiled:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    print(json.dumps({"model": args.model_path, "dataset": args.dataset, **result}, indent=2))


def _export(args):
    import keras
    import numpy as np

    from kqrobust import export

    model = keras.models.load_model(args.model_path)
    if args.representative:
        representative = np.load(args.representative)
        x, y = representative, None
    else:
        data = _evaluation_data(args)
        representative = data.calibration
        x, y = data.test_arrays
    for path in filter(None, (args.tflite, args.onnx)):
        if path.endswith(".tflite"):
            export.to_tflite(model, representative, path, io_dtype=args.io_dtype)
        else:
            export.to_onnx(model, path)
        export.verify(path, model, x, labels=y)
        if path.endswith(".tflite"):
            print(export.check_edgetpu(path))


def build_parser():
    parser = argparse.ArgumentParser(prog="kqrobust", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="float training, QAT, evaluation, export and reports")
    _add_job_flags(train)
    train.set_defaults(run=_train)
    for name, run, help_text in (("evaluate", _evaluate, "test accuracy of a saved .keras model"),
                                 ("export", _export, "export a .keras model to TFLite/ONNX and verify")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("model_path", help="a saved .keras model")
        command.add_argument("--dataset", default="digits", help="digits, cifar10 or cifar100")
        command.add_argument("--data_dir", default=None, help="directory of prepared TFDS data")
        command.add_argument("--batch_size", type=int, default=128, help="evaluation batch size")
        command.set_defaults(run=run)
        if name == "export":
            command.add_argument("--tflite", default=None, help="output .tflite path")
            command.add_argument("--onnx", default=None, help="output .onnx path")
            command.add_argument("--io_dtype", default="int8", choices=["int8", "uint8", "float32"],
                                 help="TFLite input/output type (uint8 for Edge TPU)")
            command.add_argument("--representative", default=None,
                                 help="a .npy file of representative inputs (default: the dataset)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "export" and not (args.tflite or args.onnx):
        build_parser().error("export needs --tflite and/or --onnx")
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
