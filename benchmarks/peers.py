"""Side-by-side benchmark of kqrobust against tfmot, Keras' quantize and TFLite PTQ.

    make bench-peers                     # full run, from .venv-peer
    python benchmarks/peers.py --out_dir runs/peers [--epochs 10] [--rounds 2]
        [--jit_compile] [--mixed_precision]   # step times only, e.g. on a GPU

tfmot 0.8.1 forces Keras 2 (tf_keras) on the whole process, so this script
only orchestrates: `benchmarks/peers/kqrobust_side.py` (Keras 3: kqrobust,
`model.quantize`, the TFLite converter) and `benchmarks/peers/tfmot_side.py`
(tf_keras + tfmot, TF_USE_LEGACY_KERAS=1) run as subprocesses on the same
data and the same float weights, and their JSON results are merged into
`results.json` and the Markdown tables of `results.md`.

Measured (see benchmarks/README.md):
  - digits, `kq.testing.small_cnn` (and its tf_keras twin): tfmot default 8-bit
    QAT against kqrobust LSQ W8A8 from the same float weights, same epochs;
    TFLite converter PTQ and `model.quantize` against `kq.ptq.quantize`
    (min-max, ACIQ) and `kq.robustify` + PTQ at W8A8 / W4A8 / W4A4;
  - train-step time of both QATs on small_cnn and ResNet-20 (random data);
  - int8 TFLite size, LiteRT latency and accuracy of every exported model.
"""

import argparse
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SIDES = os.path.join(HERE, "peers")
sys.path.insert(0, SIDES)

import report  # noqa: E402

import shared  # noqa: E402

ROOT = os.path.dirname(HERE)
DEFAULT_TFMOT_PYTHON = os.path.join(ROOT, ".venv-peer", "bin", "python")


def _env(legacy_keras):
    """The subprocess environment; TF_USE_LEGACY_KERAS=1 only for the tfmot side."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return env


def tfmot_unavailable(python):
    """Why tfmot cannot run under `python` (None if it can)."""
    if not python or not os.path.exists(python):
        return (
            f"no tfmot interpreter at {python!r} (make bench-peers creates "
            ".venv-peer with tensorflow-model-optimization and tf_keras)"
        )
    probe = subprocess.run(
        [python, "-c", "import tensorflow_model_optimization, tf_keras"],
        env=_env(True),
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"tensorflow_model_optimization/tf_keras not importable by {python}: {last}"
    return None


class Runner:
    """Runs one side's command in a subprocess and returns its JSON result."""

    def __init__(self, out_dir, kq_python, tfmot_python, common_flags):
        self.out_dir = out_dir
        self.pythons = {"kqrobust": kq_python, "tfmot": tfmot_python}
        self.common_flags = common_flags
        self.count = 0

    def __call__(self, side, command, *flags):
        self.count += 1
        stem = f"{self.count:02d}_{side}_{command}"
        out = os.path.join(self.out_dir, f"{stem}.json")
        log = os.path.join(self.out_dir, f"{stem}.log")
        cmd = [
            self.pythons[side],
            os.path.join(SIDES, f"{side}_side.py"),
            command,
            "--out",
            out,
            "--work_dir",
            self.out_dir,
            *self.common_flags,
            *flags,
        ]
        print(f"[peers] {side} {command} {' '.join(flags)}", flush=True)
        with open(log, "w") as f:
            done = subprocess.run(
                cmd, env=_env(side == "tfmot"), stdout=f, stderr=subprocess.STDOUT
            )
        if done.returncode:
            with open(log) as f:
                tail = "".join(f.readlines()[-30:])
            raise RuntimeError(
                f"{' '.join(cmd)} failed (exit {done.returncode}); log {log}:\n{tail}"
            )
        return shared.read_json(out)


def run(args):
    """Runs both sides; writes and returns the merged results (see the module docstring)."""
    os.makedirs(args.out_dir, exist_ok=True)
    skipped = []
    reason = tfmot_unavailable(args.tfmot_python)
    if reason and args.require_tfmot:
        raise SystemExit(f"--require_tfmot: {reason}")
    if reason:
        skipped.append(f"tfmot side: {reason}")
    with_tfmot = reason is None
    flags = ["--seed", str(args.seed), "--latency_runs", str(args.latency_runs)]
    side = Runner(args.out_dir, args.kq_python, args.tfmot_python, flags)

    prepared = side(
        "kqrobust",
        "prepare",
        "--float_epochs",
        str(args.float_epochs),
        "--batch_size",
        str(args.batch_size),
    )
    training = ["--epochs", str(args.epochs), "--batch_size", str(args.batch_size)]
    digits = side(
        "kqrobust",
        "digits",
        *training,
        "--ptq_methods",
        *args.ptq_methods,
        "--ptq_bits",
        *args.ptq_bits,
    )
    if digits["missing_api"]:
        skipped.append(
            "kqrobust exports: "
            + ", ".join(digits["missing_api"])
            + " not available in this checkout"
        )
    rows = dict(digits["rows"])
    if with_tfmot:
        tfmot_digits = side("tfmot", "digits", *training)
        rows.update(tfmot_digits["rows"])
        gap = abs(tfmot_digits["float_accuracy"] - prepared["float_accuracy"])
        if gap > 1e-6:
            raise RuntimeError(
                f"The tf_keras twin of small_cnn does not reproduce the Keras 3 float "
                f"accuracy ({tfmot_digits['float_accuracy']} vs "
                f"{prepared['float_accuracy']}): the two builders differ."
            )

    step_time = {}
    for arch in args.archs:
        batch = args.batch_size if arch == "small_cnn" else args.resnet_batch_size
        timing = ["--arch", arch, "--batch_size", str(batch), "--repeats", str(args.repeats)]
        timing += ["--jit_compile"] * args.jit_compile
        timing += ["--mixed_precision"] * args.mixed_precision
        runs = {"kqrobust": [], "tfmot": []}
        for _ in range(args.rounds):
            runs["kqrobust"].append(side("kqrobust", "time", *timing))
            if with_tfmot:
                runs["tfmot"].append(side("tfmot", "time", *timing))
        if with_tfmot and runs["tfmot"][0]["params"] != runs["kqrobust"][0]["params"]:
            raise RuntimeError(
                f"{arch}: tf_keras twin has {runs['tfmot'][0]['params']} "
                f"parameters, Keras 3 model {runs['kqrobust'][0]['params']}."
            )
        step_time[arch] = dict(
            report.step_time_summary(runs["kqrobust"], runs["tfmot"]), batch_size=batch
        )

    tflite = {"small_cnn (digits)": rows}
    for arch in args.archs:
        if arch == "small_cnn":
            continue
        exported = dict(side("kqrobust", "export", "--arch", arch)["rows"])
        if with_tfmot:
            exported.update(side("tfmot", "export", "--arch", arch)["rows"])
        tflite[f"{arch} (random weights)"] = exported

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + ", ".join(f"{k} {v}" for k, v in digits["versions"].items()),
        "config": vars(args),
        "skipped": skipped,
        "float_accuracy": prepared["float_accuracy"],
        "digits": rows,
        "step_time": step_time,
        "tflite": tflite,
    }
    shared.write_json(os.path.join(args.out_dir, "results.json"), results)
    text = report.markdown(results)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="runs/peers")
    parser.add_argument("--epochs", type=int, default=10, help="QAT epochs (both sides).")
    parser.add_argument("--float_epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--resnet_batch_size", type=int, default=128)
    parser.add_argument(
        "--archs",
        nargs="+",
        default=["small_cnn", "resnet20"],
        choices=["small_cnn", "resnet20"],
        help="Step-time models.",
    )
    parser.add_argument("--repeats", type=int, default=15, help="Timed steps per round.")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="Alternating kqrobust/tfmot timing processes per model.",
    )
    parser.add_argument("--latency_runs", type=int, default=100)
    parser.add_argument(
        "--ptq_methods",
        nargs="+",
        default=["minmax", "aciq_laplace"],
        help="kq.ptq methods of the PTQ table.",
    )
    parser.add_argument(
        "--ptq_bits",
        nargs="+",
        default=["w8a8", "w4a8", "w4a4"],
        help="PTQ bit-widths, w<bits>a<bits>.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jit_compile",
        action="store_true",
        help="Step times with XLA-compiled train steps (both sides).",
    )
    parser.add_argument(
        "--mixed_precision",
        action="store_true",
        help="Step times under the mixed_float16 policy (both sides).",
    )
    parser.add_argument(
        "--kq_python", default=sys.executable, help="Interpreter of the Keras 3 side."
    )
    parser.add_argument(
        "--tfmot_python",
        default=DEFAULT_TFMOT_PYTHON,
        help="Interpreter with tfmot + tf_keras (.venv-peer).",
    )
    parser.add_argument(
        "--require_tfmot", action="store_true", help="Fail instead of skipping the tfmot side."
    )
    args = parser.parse_args(argv)
    for bits in args.ptq_bits:
        if not shared.BITS_PATTERN.match(bits):
            parser.error(
                f"--ptq_bits takes w<2-8>a<2-8> values such as w4a8. Received: --ptq_bits={bits}"
            )
    for name in (
        "epochs",
        "float_epochs",
        "batch_size",
        "resnet_batch_size",
        "repeats",
        "rounds",
        "latency_runs",
    ):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name} must be a positive int. Received: --{name}={getattr(args, name)}"
            )
    return args


if __name__ == "__main__":
    run(parse_args())
