"""Every solution notebook executes top to bottom in a fresh kernel (what a learner's finished
notebook does). Time and peak memory are printed; budgets are benchmarks (`make bench`).

Each notebook runs once per test session (``course_run.executed_solution``); a test that reads
a notebook's outputs takes the executed copy from there instead of running it again."""

from __future__ import annotations

import pytest

from tests.course_layout import course_chapters


@pytest.mark.slow
@pytest.mark.parametrize("layout", course_chapters(), ids=lambda c: c.name)
def test_solution_notebook_executes(layout, course_run):
    result, _ = course_run.executed_solution(layout)
    print(f"{layout.name}: {result.seconds} s, peak {result.peak_rss_mb} MB")
    assert result.ok, result.error
