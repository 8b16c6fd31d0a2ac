"""Convert a saved `.keras` model to full-integer TFLite and/or ONNX, then verify.

One implementation behind `kqrobust export` and `tflite_export/convert.py`:

    kqrobust export runs/x/qat.keras --tflite=model.tflite --onnx=model.onnx
    python tflite_export/convert.py model.keras --tflite=m.tflite --io_dtype=uint8 \\
        --representative=calib.npy --verify_data=x.npy --verify_labels=y.npy

The representative set comes from the bundled data (`--dataset`, default the
offline digits) or a `.npy` file of input samples. The converted files are
run in LiteRT / onnxruntime on real data and compared with the Keras model
(`kq.export.verify`); a `.tflite` also gets the static Edge TPU report
(`kq.export.check_edgetpu`).
"""

import argparse
import os
import sys


def _shape(text):
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--input_shape must be comma-separated ints such as 32,32,3. Received: {text!r}"
        ) from error
    return shape


def build_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("model_path", help="a saved .keras model")
    parser.add_argument("--tflite", default=None, help="output .tflite path")
    parser.add_argument("--onnx", default=None, help="output .onnx path")
    parser.add_argument(
        "--io_dtype",
        default=None,
        choices=["int8", "uint8", "int16", "float32"],
        help="TFLite input/output type (uint8 for the Edge TPU; default: the activation type)",
    )
    parser.add_argument(
        "--weight_dtype",
        default="int8",
        choices=["int8", "int4"],
        help="TFLite kernels: int4 stores the layers trained at <= 4 bits "
        "as INT4 (LiteRT CPU/GPU, not the Edge TPU)",
    )
    parser.add_argument(
        "--activation_dtype",
        default="int8",
        choices=["int8", "int16"],
        help="TFLite activations: int16 is the 16x8 mode (int8 weights)",
    )
    parser.add_argument(
        "--float",
        dest="quantize",
        action="store_false",
        help="write a float TFLite model instead (for comparison)",
    )
    parser.add_argument(
        "--dataset", default="digits", help="bundled data: digits, cifar10, cifar100"
    )
    parser.add_argument("--data_dir", default=None, help="directory of prepared TFDS data")
    parser.add_argument(
        "--representative",
        default=None,
        help="a .npy file of representative inputs (default: the dataset)",
    )
    parser.add_argument("--num_samples", type=int, default=200, help="representative samples used")
    parser.add_argument(
        "--verify_data",
        default=None,
        help="a .npy file of inputs to verify on (default: the dataset's test split)",
    )
    parser.add_argument("--verify_labels", default=None, help="a .npy file of their labels")
    parser.add_argument(
        "--input_shape",
        type=_shape,
        default=None,
        help="fixed input shape for models with unknown sizes, e.g. 32,32,3",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default 17; 21 with --weight_dtype int4)",
    )
    parser.add_argument("--num_threads", type=int, default=1, help="runtime threads")
    return parser


def _data(args):
    """`(representative, x_verify, y_verify)` from the flags."""
    import numpy as np

    bundled = None
    if args.representative is None or args.verify_data is None:
        from kqrobust.pipeline.data import load_job_data

        bundled = load_job_data(args.dataset, 128, args.data_dir)
    representative = np.load(args.representative) if args.representative else bundled.calibration
    if args.verify_data:
        x = np.load(args.verify_data)
        y = np.load(args.verify_labels) if args.verify_labels else None
    else:
        x, y = bundled.test_arrays
    return representative, x, y


def run(args):
    """Converts and verifies as the parsed flags `args` say; returns the results."""
    if not (args.tflite or args.onnx):
        raise SystemExit("kqrobust export: give --tflite and/or --onnx")
    if args.onnx and args.activation_dtype != "int8":
        raise SystemExit(
            f"kqrobust export: --activation_dtype {args.activation_dtype} is a TFLite mode (16x8); "
            "ONNX exports have int8 activations. Fix: export --onnx without it."
        )
    from kqrobust import export
    from kqrobust.saving import load_model

    model = load_model(args.model_path)
    representative, x, y = _data(args)
    results = {}
    if args.tflite:
        export.to_tflite(
            model,
            representative,
            args.tflite,
            io_dtype=args.io_dtype,
            quantize=args.quantize,
            input_shape=args.input_shape,
            num_samples=args.num_samples,
            weight_dtype=args.weight_dtype,
            activation_dtype=args.activation_dtype,
        )
        print(f"== {args.tflite} ({os.path.getsize(args.tflite)} bytes)")
        print(export.weight_summary(args.tflite, [layer.name for layer in model.layers]))
        results["tflite"] = export.verify(
            args.tflite, model, x, labels=y, num_threads=args.num_threads
        )
        print(export.check_edgetpu(args.tflite))
    if args.onnx:
        export.to_onnx(
            model,
            args.onnx,
            opset=args.opset,
            input_shape=args.input_shape,
            weight_dtype=args.weight_dtype,
        )
        print(f"== {args.onnx} ({os.path.getsize(args.onnx)} bytes)")
        results["onnx"] = export.verify(args.onnx, model, x, labels=y, num_threads=args.num_threads)
    return results


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
    sys.exit(0)
