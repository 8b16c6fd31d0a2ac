"""`print_msg`: stdout while Keras logs interactively, absl logging otherwise."""

import keras
from absl import logging

from kqrobust.io_utils import print_msg


def test_print_msg_writes_a_line_to_stdout(capsys):
    print_msg("[kqrobust] float phase: 3 epochs")
    assert capsys.readouterr().out == "[kqrobust] float phase: 3 epochs\n"


def test_print_msg_logs_when_interactive_logging_is_off(capsys, monkeypatch):
    logged = []
    monkeypatch.setattr(logging, "info", lambda message: logged.append(message))
    keras.utils.disable_interactive_logging()
    try:
        print_msg(12)
    finally:
        keras.utils.enable_interactive_logging()
    assert logged == ["12"]
    assert capsys.readouterr().out == ""
