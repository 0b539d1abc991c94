"""Shared package for the mechanistic interpretability course.

Every notebook imports from here; nothing is reached through ``sys.path`` hacks.
One module per concern: ``paths`` (where things live), ``smollm2`` (the real LM),
``toy_models`` / ``training`` (models the course trains itself), ``data`` (datasets the
course makes), ``build`` (solutions -> chapters), ``grading`` (hidden checks in a sandbox),
``nbgrader_course`` (the instructor workflow), ``bench`` (performance figures).
"""
