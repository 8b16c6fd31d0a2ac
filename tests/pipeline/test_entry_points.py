"""Smoke tests of the job's entry points: train_cifar.py on tfds mock data, the CLI, the demo."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from kqrobust import cli
from kqrobust.pipeline import JobConfig
from kqrobust.pipeline import run_job

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_job_on_mocked_cifar10(tmp_path):
    config = JobConfig(
        dataset="cifar10",
        model="small_cnn",
        float_epochs=1,
        qat_epochs=1,
        batch_size=8,
        steps_per_epoch=2,
        export=False,
        report=False,
        out_dir=str(tmp_path),
    )
    with tfds.testing.mock_data(num_examples=32):
        summary = run_job(config)
    assert 0.0 <= summary["qat_accuracy"] <= 1.0
    assert (tmp_path / "qat.keras").exists() and (tmp_path / "float.keras").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["dataset"] == "cifar10"


def test_train_cifar_script_under_mock_data(tmp_path):
    module = _load_example("train_cifar")
    argv = [
        "train_cifar",
        "--dataset=cifar100",
        "--model=small_cnn",
        "--recipe=lsq",
        "--float_epochs=1",
        "--qat_epochs=1",
        "--batch_size=8",
        "--steps_per_epoch=1",
        "--noexport",
        "--noreport",
        f"--out_dir={tmp_path}",
    ]
    module.FLAGS(argv)
    try:
        with tfds.testing.mock_data(num_examples=16):
            module.main([])
    finally:
        module.FLAGS.unparse_flags()
    assert (tmp_path / "summary.json").exists()


def test_cli_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(
        [
            "train",
            "--dataset=digits",
            "--float_epochs=1",
            "--qat_epochs=1",
            "--no-export",
            "--no-report",
            f"--out_dir={out}",
            "--weight_bits=3",
            "--activation_bits=3",
        ]
    )
    assert (out / "qat.keras").exists()
    capsys.readouterr()
    cli.main(["evaluate", str(out / "qat.keras"), "--dataset=digits"])
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["accuracy"] <= 1.0
    cli.main(
        [
            "export",
            str(out / "qat.keras"),
            f"--tflite={out / 'm.tflite'}",
            f"--onnx={out / 'm.onnx'}",
            "--io_dtype=uint8",
        ]
    )
    printed = capsys.readouterr().out
    assert "litert accuracy" in printed and "onnxruntime accuracy" in printed
    assert "Edge TPU check" in printed


def test_cli_help_documents_every_flag():
    result = subprocess.run(
        [sys.executable, "-m", "kqrobust.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--recipe", "--weight_bits", "--strategy", "--float_checkpoint", "--data_dir"):
        assert flag in result.stdout


def test_cli_export_needs_a_target(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["export", str(tmp_path / "m.keras")])


def test_offline_cifar_fails_fast_with_a_clear_message(tmp_path):
    config = JobConfig(dataset="cifar10", data_dir=str(tmp_path), out_dir=str(tmp_path))
    from kqrobust.datasets import DatasetUnavailableError

    with pytest.raises(DatasetUnavailableError, match="--dataset=digits"):
        run_job(config)


@pytest.mark.slow
@pytest.mark.ci
def test_demo_fast_mode_leaves_every_artifact(tmp_path):
    summary = _load_example("quickstart").main(["--out_dir", str(tmp_path), "--fast"])
    for name in (
        "float.keras",
        "qat.keras",
        "model_int8.tflite",
        "model.onnx",
        "verification.md",
        "edgetpu.md",
        "summary.json",
        "report/report.md",
        "report/report.json",
        "report/accuracy_vs_bits.png",
        "report/kl_per_layer.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    for kind in ("tflite", "onnx"):
        assert summary["export"][kind]["num_samples"] == 359
        assert 0.0 <= summary["export"][kind]["agreement"] <= 1.0
    assert "FP" in summary["bitwidth_sweep"]["float"]


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"recipe": "bogus"}, "Unknown recipe.*'bogus'"),
        ({"weight_bits": 9}, r"weight_bits must be an int in \[2, 8\]. Received: weight_bits=9"),
        ({"activation_bits": 1}, r"activation_bits must be an int in \[2, 8\]"),
        ({"model": "vgg"}, "Unknown model: 'vgg'"),
        (
            {"learning_rate": -1.0},
            "learning_rate must be a positive number. Received: learning_rate=-1.0",
        ),
        ({"qat_learning_rate": float("nan")}, "qat_learning_rate must be a positive number"),
    ],
)
def test_bad_settings_fail_before_any_training(tmp_path, changes, match):
    config = JobConfig(out_dir=str(tmp_path), export=False, report=False, **changes)
    with pytest.raises(ValueError, match=match):
        run_job(config)
    assert not (tmp_path / "float.keras").exists()
