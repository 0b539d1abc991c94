"""`utils.claims.claim`: a prose sentence asserted against what the run measured."""

from __future__ import annotations

import pytest
import torch

from utils.claims import ClaimFailed, claim


def test_a_true_claim_prints_the_measurement_and_returns_it(capsys):
    assert claim("the head attends to the previous token", torch.tensor(0.734),
                 at_least=0.5) == pytest.approx(0.734)
    assert capsys.readouterr().out == \
        "✓ the head attends to the previous token: measured 0.734 (at least 0.5)\n"
    claim("the ratio is about 29", 30.1, near=29)
    claim("the layer is 7", 7, equals=7)
    claim("K-composition stands out", 3.0 > 1.0)
    claim("between", 5, between=(5, 6))


@pytest.mark.parametrize("kwargs", [dict(at_least=0.9), dict(at_most=0.1), dict(near=0.5),
                                    dict(between=(0.8, 1.0)), dict(equals=1)])
def test_a_false_claim_fails_with_the_sentence_and_the_measurement(kwargs):
    with pytest.raises(ClaimFailed, match=r"The text says: the score is high\. This run "
                                          r"measured 0\.7"):
        claim("the score is high", 0.7, **kwargs)


def test_nan_and_untruths_fail_and_vectors_are_refused():
    with pytest.raises(ClaimFailed):
        claim("a number", float("nan"), at_least=0.0)
    with pytest.raises(ClaimFailed, match="not true"):
        claim("K-composition stands out", False)
    with pytest.raises(TypeError, match=r"shape \[3\]: reduce it first"):
        claim("a vector", torch.ones(3), at_least=0)
