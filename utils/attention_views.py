"""Interactive attention views with circuitsvis that work offline and never wait for the web.

circuitsvis's own display probes the internet for a second and then falls back to inlining
its ~1.3 MB script; ``str(view)`` even returns a CDN version that does not render offline.
These helpers always use the local, self-contained script (so a view renders on Binder, on a
plane and in a headless browser), and skip the probe. Keep outputs out of committed notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from IPython.display import HTML


def _local(view) -> HTML:
    return HTML(view.local_src)


def _check(tokens: Sequence[str], pattern: torch.Tensor) -> torch.Tensor:
    pattern = pattern.detach().to("cpu", torch.float32)
    if pattern.ndim != 3:
        raise ValueError("expected pattern [head_index, dest_pos, src_pos], "
                         f"got {list(pattern.shape)}")
    if pattern.shape[-1] != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but the pattern has {pattern.shape[-1]} positions")
    return pattern


def attention_patterns(tokens: Sequence[str], pattern: torch.Tensor) -> HTML:
    """All heads of one layer, hover to pick one: ``pattern`` is ``[head_index, dest, src]``."""
    import circuitsvis as cv

    view = cv.attention.attention_patterns(tokens=list(tokens), attention=_check(tokens, pattern))
    return _local(view)


def attention_heads(tokens: Sequence[str], pattern: torch.Tensor,
                    head_names: Sequence[str] | None = None) -> HTML:
    """Like :func:`attention_patterns`, but one large panel per head (circuitsvis's other view)."""
    import circuitsvis as cv

    pattern = _check(tokens, pattern)
    names = list(head_names) if head_names else [f"H{h}" for h in range(pattern.shape[0])]
    view = cv.attention.attention_heads(tokens=list(tokens), attention=pattern,
                                        attention_head_names=names)
    return _local(view)


def colored_tokens(tokens: Sequence[str], values: torch.Tensor) -> HTML:
    """Tokens shaded by a value each (e.g. per-token loss or a feature's activation)."""
    import circuitsvis as cv

    values = values.detach().to("cpu", torch.float32)
    return _local(cv.tokens.colored_tokens(tokens=list(tokens), values=values))
