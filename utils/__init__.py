"""Shared package for the mechanistic interpretability course.

Every notebook imports from here; nothing is reached through ``sys.path`` hacks. One module
per concern: what each module owns is listed in the README ("For contributors"), and the
chapter contract is docs/AUTHORING.md.
"""
