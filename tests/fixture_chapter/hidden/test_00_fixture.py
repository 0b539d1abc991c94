"""Hidden checks for the fixture chapter (two exercises, no model)."""

import torch

from course_tools.grading.checks import assert_close, expect_tensor, points
from course_tools.grading.diagnosis import Mistake


def reference_center_rows(x):
    return x - x.sum(-1, keepdim=True) / x.shape[-1]


def reference_mask_future(scores):
    dest, src = scores.shape[-2:]
    keep = torch.arange(src)[None, :] <= torch.arange(dest)[:, None]
    return torch.where(keep, scores, torch.full_like(scores, float("-inf")))


@points(1)
def test_center_rows(submission):
    center_rows = submission.function("center_rows", timeout=5, memory_mb=512)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(11)) * 3 + 1
    got = expect_tensor(center_rows(x), "center_rows", "batch d_model", (5, 7))
    assert_close(got, reference_center_rows(x), "center_rows")


@points(2)
def test_mask_future(submission):
    mask_future = submission.function("mask_future", timeout=5, memory_mb=512)
    scores = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(12))
    got = mask_future(scores)
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape:
        expect_tensor(got, "mask_future", "batch head_index dest_pos src_pos", scores.shape)
    expected = reference_mask_future(scores)
    if not torch.equal(got.isinf(), expected.isinf()):
        raise AssertionError("the masked positions are wrong: mask exactly src_pos > dest_pos")
    finite = ~expected.isinf()
    assert_close(got[finite], expected[finite], "mask_future", what="unmasked scores")
    # A non-square case: the mask must follow dest/src positions, not the last dimension only.
    rect = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(13))
    assert torch.equal(mask_future(rect).isinf(), reference_mask_future(rect).isinf())


MUTANTS = {
    "center_rows": {
        "column_mean": Mistake(
            "you subtracted the mean of each column (over the batch) instead of each row's own "
            "mean: average over the last axis",
            """def center_rows(x):
    return x - x.mean(dim=0, keepdim=True)"""),
        "divides_by_std": Mistake(
            "you also divided by the standard deviation: centring only subtracts the mean",
            """def center_rows(x):
    return (x - x.mean(dim=-1, keepdim=True)) / x.std(dim=-1, keepdim=True)"""),
        "in_place": Mistake(
            "you changed the input tensor in place (`x -= ...`): compute a new tensor instead",
            """def center_rows(x):
    x -= x.mean(dim=-1, keepdim=True)
    return x"""),
    },
    "mask_future": {
        "masks_diagonal": Mistake(
            "you also masked the diagonal: a position may attend to itself, so mask only "
            "source positions after the destination",
            """import torch as t
def mask_future(scores):
    mask = t.triu(t.ones(scores.shape[-2:], dtype=t.bool), diagonal=0)
    return scores.masked_fill(mask, float("-inf"))"""),
        "masks_past": Mistake(
            "you masked the past instead of the future: the masked entries are those with "
            "src_pos > dest_pos",
            """import torch as t
def mask_future(scores):
    mask = t.tril(t.ones(scores.shape[-2:], dtype=t.bool), diagonal=-1)
    return scores.masked_fill(mask, float("-inf"))"""),
        "zero_instead_of_inf": Mistake(
            "you filled the masked scores with 0, which still gets weight after the softmax: "
            "use -inf",
            """import torch as t
def mask_future(scores):
    mask = t.triu(t.ones(scores.shape[-2:], dtype=t.bool), diagonal=1)
    return scores.masked_fill(mask, 0.0)"""),
    },
}
