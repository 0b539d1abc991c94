"""What the course's notebooks import: models, data, plots, ``claim`` and grading from a cell.

Nothing is reached through ``sys.path`` hacks. One module per concern (the README's
"For contributors" lists them). The machinery that builds, grades and benchmarks the course
is the sibling package ``course_tools``; the chapter contract is docs/AUTHORING.md.
"""
