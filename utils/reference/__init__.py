"""Reference implementations of the exercises, one module per chapter topic.

Used by the hidden checks (trusted side) and by later chapters that need an earlier
chapter's function. They are written independently of the solution notebooks, so each
verifies the other. The grading sandbox hides this package: a submission that merely calls
a reference earns nothing.
"""
