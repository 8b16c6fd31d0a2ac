"""Convert a saved `.keras` model to full-integer TFLite and/or ONNX, then verify.

    python tflite_export/convert.py runs/x/qat.keras --tflite=model.tflite --onnx=model.onnx

The same command as `kqrobust export`; `--help` lists the flags
(implementation: `kqrobust/export_command.py`).
"""

import sys

from kqrobust.export_command import main

if __name__ == "__main__":
    main()
    sys.exit(0)
