"""Messages to the user: how the library talks, in place of `print`."""

import sys

import keras
from absl import logging


def print_msg(message):
    """Writes `message` to stdout, or to absl logging when Keras logs non-interactively.

    The behaviour of Keras' own progress messages (`keras.utils` interactive logging, which
    `keras.utils.disable_interactive_logging()` turns off), through public APIs.

    Args:
        message: what to say; `str()` of it is written, followed by a newline.
    """
    message = str(message)
    if keras.utils.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        logging.info(message)
