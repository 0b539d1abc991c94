"""What a chapter's notebook contains, counted the way `../docs/AUTHORING.md` marks it.

A graded item is an answer cell (nbgrader ``grade_id``) under a markdown heading
``### Exercise: <name>`` (write a function) or ``### Investigation: <name>`` (report a finding
about a model); a prediction is a heading ``### Predict: ...``. The time plan is the markdown
table whose header is ``| Section | Exercises | Minutes |``. A chapter opts in to the
second-edition rules with notebook metadata ``{"course": {"edition": 2}}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from course_tools import notebooks

ITEM_HEADING = re.compile(r"^### (Exercise|Investigation): *`?([A-Za-z_][A-Za-z0-9_]*)`?",
                          re.MULTILINE)
PREDICT_HEADING = re.compile(r"^### Predict:", re.MULTILINE)
MINUTES = re.compile(r"about (\d+) minutes")
HINT_1 = re.compile(r"<summary>Hint 1</summary>(.*?)</details>", re.DOTALL)
PLAN_ROW = re.compile(r"^\|(?P<section>[^|]*)\|(?P<items>[^|]*)\|(?P<minutes>[^|]*)\|\s*$",
                      re.MULTILINE)


@dataclass
class Item:
    kind: str  # "Exercise" or "Investigation"
    name: str
    minutes: int | None
    hint_1: str | None = None


@dataclass
class ChapterOutline:
    edition: int
    items: dict[str, Item] = field(default_factory=dict)
    predictions: int = 0
    plan: list[tuple[str, list[str], int]] = field(default_factory=list)
    plan_total: int | None = None

    @property
    def investigations(self) -> list[Item]:
        return [i for i in self.items.values() if i.kind == "Investigation"]


def _plan(text: str) -> tuple[list[tuple[str, list[str], int]], int | None]:
    rows, total = [], None
    for m in PLAN_ROW.finditer(text):
        section, minutes = m["section"].strip(), m["minutes"].strip()
        if section in ("Section", "---") or set(section) <= set("-: "):
            continue
        if "Total" in section:
            hours = re.search(r"(\d+(?:\.\d+)?) hours?", minutes)
            mins = re.search(r"(\d+) min", minutes)
            total = round(float(hours[1]) * 60) if hours else int(mins[1]) if mins else None
            continue
        number = re.search(r"\d+", minutes)
        rows.append((section, re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", m["items"]),
                     int(number[0]) if number else 0))
    return rows, total


def outline(nb) -> ChapterOutline:
    """The chapter's graded items, predictions and time plan, read from its cells."""
    course = nb.metadata.get("course", {}) if isinstance(nb.metadata, dict) else {}
    result = ChapterOutline(edition=int(course.get("edition", 1)))
    answers = set(notebooks.answer_cells(nb))
    heading: Item | None = None
    for cell in nb.cells:
        if cell.get("cell_type") != "markdown":
            continue
        text = notebooks.cell_source(cell)
        result.predictions += len(PREDICT_HEADING.findall(text))
        if "| Section |" in text and "| Minutes |" in text:
            result.plan, result.plan_total = _plan(text)
        for m in ITEM_HEADING.finditer(text):
            minutes = MINUTES.search(text[m.end():m.end() + 300])
            heading = Item(m[1], m[2], int(minutes[1]) if minutes else None)
            if heading.name in answers:
                result.items[heading.name] = heading
        hint = HINT_1.search(text)
        if hint and heading is not None and heading.hint_1 is None:
            heading.hint_1 = hint[1]
    return result
