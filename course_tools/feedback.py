"""What a learner reads in their feedback: messages (full or brief), hints, offline pages.

* :func:`brief` keeps what went wrong and drops the hidden checks' inputs and expected values
  (numbers, value lists, the learner's printed output), for grading with a private overlay.
* :func:`explain` adds a hint to a ``NameError`` for a helper the learner defined in another
  cell: each answer is graded on its own.
* :class:`OfflineFeedbackExporter` is nbgrader's feedback HTML with the maths rendered by a
  MathJax copy inlined in the page (from the ``sphinx-mathjax-offline`` wheel) instead of a
  CDN, and messages wrapped to the page width.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from nbconvert.exporters import HTMLExporter

WITHHELD = "…"
NUMBER = re.compile(r"(?<![\w.])(?<!line )[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w])|"
                    r"(?<![\w.])[-+]?(?:inf|nan)\b|\b(?:True|False|None)\b")
VALUE_LIST = re.compile(r"\[[\s,…()\[\]]*…[\s,…()\[\]]*\]")
TENSOR = re.compile(r"tensor\(\[[^)]*\)")
LOG_TAIL = re.compile(r"\n\s*last output of your code:.*", re.S)
UNDEFINED_NAME = re.compile(r"NameError: name '([A-Za-z_]\w*)' is not defined")


def brief(message: str) -> str:
    """``message`` without literal values: numbers, booleans and value lists become ``…``,
    and the learner's printed output is dropped (it may print the hidden inputs)."""
    text = LOG_TAIL.sub("", message)
    text = TENSOR.sub(f"tensor({WITHHELD})", text)
    text = NUMBER.sub(WITHHELD, text)
    previous = None
    while previous != text:
        previous, text = text, VALUE_LIST.sub(f"[{WITHHELD}]", text)
    return text


def defined_names(source: str) -> set[str]:
    """Functions, classes and top-level variables a cell defines (by a light parse)."""
    found = set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", source, re.M))
    found |= set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)", source, re.M))
    return found


def explain(message: str, other_cells: list[str]) -> str:
    """Add a hint when the answer used a name that only another cell of the notebook defines."""
    match = UNDEFINED_NAME.search(message)
    if not match:
        return message
    name = match.group(1)
    where = ("it is defined in another cell of your notebook, but "
             if any(name in defined_names(src) for src in other_cells) else "")
    return (f"{message}\n  Hint: {where}each answer cell is graded on its own, after the "
            f"chapter's setup cell only: define `{name}` (or import it) inside this answer cell.")


# ------------------------------------------------------------------ offline feedback pages
MATHJAX_WHEEL = "sphinx-mathjax-offline"
MATHJAX_FILE = "sphinx-mathjax-offline/static/mathjax/tex-svg-full.js"
CDN_MATHJAX = re.compile(r'<script src="[^"]*mathjax[^"]*">\s*</script>', re.I)
MATHJAX2_CONFIG = re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S)
MATHJAX3_CONFIG = """<script>window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']],
        displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  svg: {fontCache: 'global'}, loader: {load: []}
};</script>"""
WRAP_CSS = """<style>
/* feedback messages and outputs wrap at the page width instead of running off it */
div.output_area pre, div.output_subarea pre, .jp-OutputArea-output pre {
  white-space: pre-wrap; overflow-wrap: anywhere; }
</style>"""


@lru_cache(maxsize=1)
def offline_mathjax() -> str | None:
    """MathJax 3 (TeX input, SVG output: no font files) from its wheel, or None."""
    try:
        path = Path(str(metadata.distribution(MATHJAX_WHEEL).locate_file(MATHJAX_FILE)))
    except metadata.PackageNotFoundError:
        return None
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script") \
        if path.is_file() else None


def make_offline(html: str, mathjax: str | None) -> str:
    """Swap the page's CDN MathJax for an inlined copy; make long messages wrap."""
    html = html.replace("</head>", WRAP_CSS + "\n</head>", 1)
    if mathjax is None or not CDN_MATHJAX.search(html):
        return html
    html = MATHJAX2_CONFIG.sub("", html)
    inline = f"{MATHJAX3_CONFIG}\n<script>{mathjax}</script>"
    return CDN_MATHJAX.sub(lambda _: inline, html, count=1)


class OfflineFeedbackExporter(HTMLExporter):
    """nbgrader's feedback page, readable without the network."""

    def from_notebook_node(self, nb, resources=None, **kw):
        html, resources = super().from_notebook_node(nb, resources, **kw)
        mathjax = offline_mathjax()
        if mathjax is None:
            self.log.warning("maths in feedback pages needs the network: install the %s wheel "
                             "(pip install --no-deps -r requirements-nodeps.txt)", MATHJAX_WHEEL)
        return make_offline(html, mathjax), resources
