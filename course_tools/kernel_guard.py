"""Run at the start of every course kernel (IPython's ``exec_files``), by path, not imported.

A learner's own ``utils.py`` (or ``utils/`` folder) next to the notebooks hides the course's
``utils`` package, and the next ``from utils.smollm2 import ...`` fails with "'utils' is not a
package", which says nothing about why. This adds the why to any import error while that is
the case: which file hides the package, and what to do. `make setup` (and Binder's postBuild)
name this file in the environment's ``etc/ipython/ipython_kernel_config.py``.
"""


def _explain_shadowed_utils(this_file: str) -> None:
    import os
    import sys

    # This file is course_tools/kernel_guard.py; the course's package is the sibling utils/.
    course_utils = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(this_file))),
                                "utils")

    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return

    def explain(shell, etype, value, tb, tb_offset=None):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        module = sys.modules.get("utils")
        folders = [os.path.realpath(p) for p in getattr(module, "__path__", [])]
        if module is not None and os.path.realpath(course_utils) not in folders:
            where = getattr(module, "__file__", None) or folders or "a module of yours"
            print(f"\n`utils` here is {where}, which hides the course's `utils` package. "
                  "Rename it (for example to my_utils.py), then restart the kernel "
                  "(Kernel > Restart Kernel).", file=sys.stderr)

    shell.set_custom_exc((ImportError,), explain)


_explain_shadowed_utils(__file__)
del _explain_shadowed_utils
