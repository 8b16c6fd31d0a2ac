"""Convert a saved `.keras` model to full-integer TFLite and/or ONNX, then verify.

    python tflite_export/convert.py runs/x/qat.keras --tflite=model.tflite --onnx=model.onnx

The same command as `kqrobust export`; `--help` lists the flags
(implementation: `kqrobust/export_command.py`).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before kqrobust loads TensorFlow

from kqrobust.export_command import main  # noqa: E402

if __name__ == "__main__":
    main()
    sys.exit(0)
