"""Chapter 04's probe contract and its hidden check agree.

`train_and_test_probe`'s docstring asks for the regularised minimiser, whatever the
optimiser. Learners who follow it with any optimiser run to convergence must pass the hidden
check; one stopped early must fail with a message that names convergence. The answers below are
written from the docstring alone (not copied from the solution) and run in this process, on
the check's own inputs, so the test is quick.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_tools.grading.runner import load_checks_module

CHECKS = load_checks_module("04_probing", Path(__file__).parent / "hidden")
CASES = CHECKS.PROBE_CASES  # case name -> the weight decay the check fits it with


def _probe_by(optimiser: str, steps: int, lr: float = 1.0):
    """A probe that follows the contract, fitted with ``optimiser`` for ``steps`` steps."""

    def train_and_test_probe(x, y, is_train, weight_decay=1e-2):
        x_train, y_train = x[is_train], y[is_train].float()
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        z = (x_train - mean) / std
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)

        def loss():
            return (F.binary_cross_entropy_with_logits(z @ w + b, y_train)
                    + weight_decay * (w ** 2).sum())

        with torch.enable_grad():
            if optimiser == "lbfgs":
                opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps,
                                        line_search_fn="strong_wolfe")

                def closure():
                    opt.zero_grad()
                    value = loss()
                    value.backward()
                    return value

                opt.step(closure)
            else:
                opt = (torch.optim.Adam if optimiser == "adam" else torch.optim.SGD)([w, b], lr=lr)
                for _ in range(steps):
                    opt.zero_grad()
                    loss().backward()
                    opt.step()
        w_raw = w.detach() / std
        b_raw = b.item() - (mean * w_raw).sum().item()
        correct = ((x @ w_raw + b_raw > 0).long() == y).float()
        acc = correct[~is_train].mean().item()
        n_test = int((~is_train).sum())
        return {"w": w_raw, "b": b_raw, "train_acc": correct[is_train].mean().item(),
                "test_acc": acc, "test_stderr": (acc * (1 - acc) / n_test) ** 0.5}

    return train_and_test_probe


CONVERGED = {
    "LBFGS, 100 iterations (the hint)": _probe_by("lbfgs", 100),
    "LBFGS, 20 iterations": _probe_by("lbfgs", 20),
    "Adam, 300 steps at lr 0.05": _probe_by("adam", 300, 0.05),
    "Adam, 1000 steps at lr 0.01": _probe_by("adam", 1000, 0.01),
    "gradient descent, 1000 steps at lr 0.5": _probe_by("sgd", 1000, 0.5),
}


@pytest.mark.parametrize("name", list(CONVERGED))
def test_a_probe_fitted_to_convergence_passes_the_check(name):
    for case, weight_decay in CASES.items():
        x, y, is_train, _ = CHECKS._probe_case(case)
        CHECKS._check_probe_result(CONVERGED[name](x, y, is_train, weight_decay), case)


def test_a_probe_stopped_early_fails_and_is_told_to_converge():
    stopped = _probe_by("adam", 50, 0.01)  # the old docstring's "n_steps=100"-style budget
    messages = []
    for case, weight_decay in CASES.items():
        x, y, is_train, _ = CHECKS._probe_case(case)
        try:
            CHECKS._check_probe_result(stopped(x, y, is_train, weight_decay), case)
        except AssertionError as failure:
            messages.append(str(failure))
    assert messages, "a probe stopped after 50 Adam steps passed every case"
    assert all("converge" in m or "stopped before" in m or "minimiser" in m for m in messages), \
        messages


def test_the_contract_has_no_step_budget_and_asks_for_the_minimiser():
    from course_tools import notebooks
    from utils.paths import REPO_ROOT

    nb = notebooks.read_notebook(REPO_ROOT / "solutions" / "04_probing.ipynb")
    source = notebooks.answer_cells(nb)["train_and_test_probe"]
    signature = source[:source.index('"""')]
    assert "n_steps" not in signature
    assert "minimiser" in source and "convergence" in source
