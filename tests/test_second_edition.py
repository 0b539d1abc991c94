"""The second-edition rules (../shared/STYLE.md, docs/AUTHORING.md) for chapters that opt in.

A chapter opts in with notebook metadata ``{"course": {"edition": 2}}``; from then on these
hold for it, and the test fails if they stop holding.
"""

from __future__ import annotations

import re

import pytest

from course_tools import edition, notebooks
from tests.course_layout import course_chapters

CHAPTERS = course_chapters()


def _outline(layout) -> edition.ChapterOutline:
    return edition.outline(notebooks.read_notebook(layout.solution_notebook))


SECOND = [c for c in CHAPTERS if _outline(c).edition >= 2]
each_second_edition = pytest.mark.parametrize("layout", SECOND, ids=[c.name for c in SECOND])


def test_utils_edition_reads_items_predictions_and_plan():
    nb = notebooks.read_notebook(CHAPTERS[0].solution_notebook)
    found = edition.outline(nb)
    assert set(found.items) == set(notebooks.answer_cells(nb))
    assert found.plan and found.plan_total


@each_second_edition
def test_enough_graded_items_investigations_and_predictions(layout):
    found = _outline(layout)
    assert len(found.items) >= 12, f"{len(found.items)} graded items (at least 12)"
    assert len(found.investigations) >= 4, \
        f"{len(found.investigations)} investigations (at least 4)"
    assert found.predictions >= 2, f"{found.predictions} `### Predict:` cells (at least 2)"


@each_second_edition
def test_every_item_has_an_estimate_and_a_first_hint_without_code(layout):
    for item in _outline(layout).items.values():
        assert item.minutes, f"{item.name}: no 'about N minutes' under its heading"
        assert item.hint_1 is not None, f"{item.name}: no Hint 1"
        assert "```" not in item.hint_1 and not re.search(r"`[^`]*\w\([^`]*`", item.hint_1), \
            f"{item.name}: hint 1 names the idea, without code:\n{item.hint_1}"


@each_second_edition
def test_time_plan_adds_up(layout):
    found = _outline(layout)
    assert found.plan_total, "the time plan needs a **Total** row in hours or minutes"
    assert sum(m for _, _, m in found.plan) == found.plan_total, \
        f"the sections add up to {sum(m for _, _, m in found.plan)} min, the total says " \
        f"{found.plan_total}"
    planned = {name for _, names, _ in found.plan for name in names}
    assert planned == set(found.items), \
        f"graded items missing from the plan: {sorted(set(found.items) - planned)}; " \
        f"in the plan but not graded: {sorted(planned - set(found.items))}"
    for section, names, minutes in found.plan:
        needed = sum(found.items[n].minutes or 0 for n in names)
        assert needed <= minutes, f"{section}: its items take {needed} min, the plan gives " \
            f"{minutes}"
