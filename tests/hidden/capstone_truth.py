"""Ground truth of the capstone's audit models (trusted side only: the sandbox cannot read it).

``capstone_truth.json`` next to this file holds, per shipped variant, the secret phrase it is
derived from (``utils.planted_training.derive_spec``), its spec (kind, seed, behaviour tokens
as ids and as text), the behaviour measured after training, the clean held-out loss and the
sha256 of its weights. It is written by ``python -m utils.planted_training train --variant
NAME``.

An instructor's private variant (``train --variant private --secret ... --out DIR``) has its
truth in ``DIR/capstone_truth.json``; put that file in the private checks overlay
(``$COURSE_CHECKS_DIR``, the folder that already holds private hidden checks) and the weights
folder ``DIR/capstone_private`` at ``utils/weights/capstone_private``. :func:`truth` looks in
the overlay first, then here, and refuses a truth whose weights checksum does not match the
weights it would be used with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PUBLIC_TRUTH = Path(__file__).with_name("capstone_truth.json")
TRUTH_FILE_NAME = "capstone_truth.json"
PRIVATE_NAME = "capstone_private"


def _overlay_truth() -> dict[str, Any]:
    overlay = os.environ.get("COURSE_CHECKS_DIR")
    if not overlay or not (Path(overlay) / TRUTH_FILE_NAME).is_file():
        return {}
    return json.loads((Path(overlay) / TRUTH_FILE_NAME).read_text(encoding="utf-8"))


def all_truths() -> dict[str, Any]:
    """Every variant's truth: the public file's, overridden by the private overlay's."""
    public = json.loads(PUBLIC_TRUTH.read_text(encoding="utf-8"))
    return {**public, **_overlay_truth()}


def truth(name: str, weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The truth of variant ``name``, checked against its weights (``utils/weights/<name>``).

    Raises ``KeyError`` for an unknown variant (for ``capstone_private``: no
    ``capstone_truth.json`` in ``$COURSE_CHECKS_DIR``) and ``ValueError`` if the weights are
    not the ones the truth was measured on.
    """
    from utils.paths import WEIGHTS_DIR
    from utils.weights_files import file_sha256

    truths = all_truths()
    if name not in truths:
        where = "$COURSE_CHECKS_DIR/" + TRUTH_FILE_NAME if name == PRIVATE_NAME else PUBLIC_TRUTH
        raise KeyError(f"no ground truth for {name!r} (looked in {where})")
    entry = truths[name]
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR / name
    actual = file_sha256(folder / "model.safetensors")
    if actual != entry["weights_sha256"]:
        raise ValueError(f"{name}: the weights in {folder} (sha256 {actual[:12]}...) are not the "
                         f"ones its truth was measured on ({entry['weights_sha256'][:12]}...)")
    return entry
