"""The grader says how a wrong tensor differs, and names known mistakes (issue: feedback)."""

from __future__ import annotations

import pytest
import torch

from course_tools.grading.checks import SubmissionError, assert_close
from course_tools.grading.diagnosis import Mistake, describe_difference, same_value

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)) + 0.3


@pytest.mark.parametrize("got,phrase", [
    (-X, "wrong sign"),
    (X * 0.5, "0.5 times the expected one"),
    (X + 2, "off by the same +2"),
    (torch.cat([X[:, :1] * 0, X[:, 1:]], dim=1), "except at index 0 along axis 1 (d_model)"),
    (X.flip(-1), "wrong order along the last axis"),
    (X * 0, "every value is zero"),
])
def test_describe_difference_names_the_pattern(got, phrase):
    assert phrase in describe_difference(got, X, 1e-5, 1e-4, ["pos", "d_model"])


def test_square_transpose_and_shift_are_named():
    square = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    assert "axes are swapped" in describe_difference(square.T, square, 1e-5, 1e-4)
    seq = torch.randn(2, 8, generator=torch.Generator().manual_seed(2))
    shifted = torch.cat([seq[:, :1], seq[:, :-1]], dim=1)
    assert "shifted by one position along axis 1" in describe_difference(shifted, seq, 1e-5,
                                                                        1e-4)
    assert describe_difference(torch.randn(4, 6), X, 1e-5, 1e-4) == ""
    pair = torch.tensor([0.9999, 1.0])
    assert "shifted" not in describe_difference(torch.tensor([1.004, 1.0]), pair, 1e-3, 1e-3)


def test_assert_close_message_names_axes_inputs_and_pattern():
    with pytest.raises(SubmissionError) as raised:
        assert_close(X * 3, X, "f", dims="pos d_model", inputs="4 positions of a toy stream")
    message = str(raised.value)
    assert "(on 4 positions of a toy stream)" in message
    assert "3 times the expected one" in message and "first at [pos=0, d_model=0]" in message


def test_same_value_compares_structure_and_round_off():
    assert same_value({"a": [X, 1.0]}, {"a": [X + 1e-7, 1.0 + 1e-9]})
    assert not same_value({"a": [X, 1.0]}, {"a": [X, 2.0]})
    assert not same_value(X, X[:2])
    assert not same_value(X > 0, (X > 0).float())


def test_mistake_message_points_to_its_hint():
    mistake = Mistake("you averaged over the batch", "def f(x): ...", hint=2)
    assert mistake.message("f") == ("f: looks like a known mistake: you averaged over the "
                                   "batch (hint 2 of the exercise helps here)")
