"""Every solution notebook executes top to bottom in a fresh kernel (what a learner's finished
notebook does). Time and peak memory are printed; budgets are benchmarks (`make bench`)."""

from __future__ import annotations

import pytest

from tests.course_layout import course_chapters
from utils.execute import run_notebook


@pytest.mark.slow
@pytest.mark.parametrize("layout", course_chapters(), ids=lambda c: c.name)
def test_solution_notebook_executes(layout):
    result = run_notebook(layout.solution_notebook, timeout=900)
    print(f"{layout.name}: {result.seconds} s, peak {result.peak_rss_mb} MB")
    assert result.ok, result.error
