"""The TFLite converter settings for a full-integer model (int8 in, int8 out)."""

import tensorflow as tf


def full_int8(converter, representative_x, samples=100):
    """Configures `converter` for full-int8 and returns the flatbuffer bytes.

    The settings of DESIGN.md ("TFLite export recipe that works"): DEFAULT
    optimizations, a representative dataset, int8 builtins only, int8 I/O.
    The same call converts a float model (the converter's own PTQ) and a
    QAT model (its fake-quant ranges are kept; the data sets the I/O scale).

    Args:
        converter: a `tf.lite.TFLiteConverter`.
        representative_x: float inputs `(N, ...)`.
        samples: how many of them feed the representative dataset.

    Returns:
        The `.tflite` flatbuffer as bytes.
    """

    def representative_dataset():
        for i in range(min(samples, len(representative_x))):
            yield [representative_x[i : i + 1].astype("float32")]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
