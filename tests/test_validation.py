"""kqrobust.validation: the boundary checks and their messages (problem, value, fix)."""

import numpy as np
import pytest

from kqrobust import validation


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "8", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=rf"n must be a positive int. Received: n={value!r}"):
        validation.positive_int(value, "n")


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), True, "1"])
def test_positive_refuses(value):
    with pytest.raises(ValueError, match=rf"x must be a positive number. Received: x={value!r}"):
        validation.positive(value, "x")


def test_one_of_lists_the_choices():
    assert validation.one_of("b", "mode", ("a", "b")) == "b"
    with pytest.raises(
        ValueError, match=r"mode must be one of \['a', 'b'\]. Received: mode='c'. Fix: use 'a'"
    ):
        validation.one_of("c", "mode", ("a", "b"), fix="use 'a'.")


def test_positive_int_accepts_numpy_ints():
    assert validation.positive_int(np.int64(3), "n") == 3


@pytest.mark.parametrize("value", ["8,8,1", (8, 0, 1), (), (8.0, 8, 1), 8, (True, 8)])
def test_shape_tuple_refuses(value):
    with pytest.raises(
        ValueError,
        match=r"input_shape must be a tuple of positive ints.*"
        r"Received: input_shape=.*Fix: pass e.g.",
    ):
        validation.shape_tuple(value)


def test_shape_tuple_accepts_lists():
    assert validation.shape_tuple([8, 8, 1]) == (8, 8, 1)


def test_layer_overrides_names_the_dict_form():
    assert validation.layer_overrides(None) == {}
    with pytest.raises(
        ValueError,
        match=r"layer_overrides must be a dict. Received: "
        r"layer_overrides of type list.*\{'head': \{'skip'",
    ):
        validation.layer_overrides([("head", {"skip": True})])


def test_finite_array_names_batch_sample_and_element():
    x = np.zeros((6, 2, 2), np.float32)
    x[4, 1, 0] = np.inf
    assert validation.finite_array(np.zeros((3, 2)), "x") is not None
    with pytest.raises(
        ValueError,
        match=r"x holds a non-finite value \(inf\) at sample 4, "
        r"element 2; 1 sample\(s\) of this array",
    ):
        validation.finite_array(x, "x")
    with pytest.raises(
        ValueError,
        match=r"at batch 3, sample 4 within the batch "
        r"\(sample 10 overall\)",
    ):
        validation.finite_array(x, "x", batch=3, offset=6)
    assert validation.non_finite_position(np.arange(4)) is None  # integer data is finite


def test_one_of_in_words():
    assert validation.one_of("adam", "optimizer", ("sgd", "adam"), in_words=True) == "adam"
    with pytest.raises(
        ValueError, match=r"optimizer must be 'sgd' or 'adam'. Received: optimizer='sgdw'.$"
    ):
        validation.one_of("sgdw", "optimizer", ("sgd", "adam"), in_words=True)
    with pytest.raises(ValueError, match=r"m must be None, 'a' or 'b'. Received: m='c'."):
        validation.one_of("c", "m", (None, "a", "b"), in_words=True)


def test_known_names_what_and_lists_the_choices():
    assert validation.known("digits", "dataset", ["digits", "cifar10"]) == "digits"
    with pytest.raises(
        ValueError, match=r"^Unknown dataset: 'mnist'. Choose one of \['digits', 'cifar10'\].$"
    ):
        validation.known("mnist", "dataset", ["digits", "cifar10"])


@pytest.mark.parametrize("value", [12, -1, 13.0, True, "13", None])
def test_int_at_least_refuses(value):
    assert validation.int_at_least(np.int64(21), "opset", 13) == 21
    with pytest.raises(
        ValueError, match=rf"opset must be an int >= 13. Received: opset={value!r}. Fix: use 13"
    ):
        validation.int_at_least(value, "opset", 13, fix="use 13.")
