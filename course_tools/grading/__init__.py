"""Grading: hidden checks run in the trusted process against a sandboxed submission.

* :mod:`.codec` - pickle-free values across the sandbox boundary
* :mod:`.sandbox` / :mod:`.worker` - the isolated process that runs submitted code
* :mod:`.checks` - the API hidden checks are written with
* :mod:`.recipes` - trusted values (models, caches) built inside the sandbox
* :mod:`.runner` - notebook -> report
"""
