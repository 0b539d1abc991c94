"""English text the course can ship: the documentation that comes with every Python install.

Two sources, both under the PSF licence and present in every CPython installation, gathered
at run time from the interpreter itself (nothing is downloaded or stored in the repository):

* :func:`pydoc_topics` — the help topics of ``pydoc_data/topics.py`` (``help("if")``,
  ``help("FORMATTING")``...): ~465 K characters of prose about the language.
* :func:`stdlib_docstrings` — the docstrings of the standard library's modules, classes and
  functions (~1.4 M characters on CPython 3.11), read with :mod:`ast` from the source files,
  so no module is imported (importing ``antigravity`` opens a web browser).

Everything is deterministic for a given interpreter: documents come in a fixed order (topic
name, then file path and position in the file), and :func:`split_documents` and
:func:`token_sequences` involve no randomness except an explicit ``seed``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "document_rows",
    "pydoc_topics",
    "python_docs_corpus",
    "split_documents",
    "stdlib_docstrings",
    "token_sequences",
]

# Folders of the standard library left out: test suites (code, not prose), GUI demos, and
# packages whose docstrings are mostly about deprecated machinery.
_SKIPPED_PARTS = frozenset({
    "test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
    "ensurepip", "tkinter", "distutils", "__pycache__", "__phello__",
})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def pydoc_topics() -> list[str]:
    """The help topics shipped with Python, one document per topic, sorted by topic name."""
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics) if topics[name].strip()]


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(p in _SKIPPED_PARTS or p.startswith(("test_", "config-")) for p in parts):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings_of(path: Path, min_chars: int) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    docs = []
    for node in ast.walk(tree):  # breadth-first: a fixed order for a given file
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= min_chars:
                docs.append(doc.strip())
    return docs


@functools.cache
def _stdlib_docstrings_cached(root: str, min_chars: int) -> tuple[str, ...]:
    docs: list[str] = []
    for path in _stdlib_files(Path(root)):
        docs += _docstrings_of(path, min_chars)
    return tuple(docs)


def stdlib_docstrings(min_chars: int = 80, root: str | Path | None = None) -> list[str]:
    """Docstrings of the standard library (modules, classes, functions), in a fixed order.

    ``min_chars`` drops one-liners such as ``"Return self."``. Parsing every file takes a few
    seconds on the first call; the result is memoised for the session.
    """
    root = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    return list(_stdlib_docstrings_cached(str(root), int(min_chars)))


def python_docs_corpus(include_docstrings: bool = True, min_chars: int = 80) -> list[str]:
    """The course's English corpus: pydoc help topics, then (optionally) stdlib docstrings."""
    docs = pydoc_topics()
    if include_docstrings:
        docs += stdlib_docstrings(min_chars=min_chars)
    return docs


def _bucket(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(docs: Sequence[str], test_fraction: float = 0.1, seed: int = 0
                    ) -> tuple[list[str], list[str]]:
    """Split ``docs`` into (train, test) by a hash of each document's text.

    The same document always lands on the same side (for a given ``seed``), whatever else is
    in the list, and the order within each side is the input order.
    """
    if not 0 <= test_fraction <= 1:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    train, test = [], []
    for doc in docs:
        (test if _bucket(doc, seed) < test_fraction else train).append(doc)
    return train, test


def token_sequences(tokenizer, docs: Iterable[str], seq_len: int, max_sequences: int | None = None,
                    bos_token_id: int | None = None, separator: str = "\n\n"
                    ) -> Int[Tensor, "batch pos"]:
    """Cut the documents into rows of ``seq_len`` tokens, in order, without padding.

    The documents are joined with ``separator`` and tokenised as one stream (document by
    document, so long inputs never reach the tokenizer at once); each row is a contiguous
    window of that stream. With ``bos_token_id``, every row starts with it and holds
    ``seq_len - 1`` stream tokens. The incomplete last row is dropped. ``tokenizer`` is a
    Hugging Face tokenizer (``model.tokenizer``); no special tokens are added by it.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    body = seq_len - 1 if bos_token_id is not None else seq_len
    rows: list[list[int]] = []
    buffer: list[int] = []
    first = True
    for doc in docs:
        ids = tokenizer(doc if first else separator + doc, add_special_tokens=False)["input_ids"]
        first = False
        buffer += ids
        while len(buffer) >= body:
            chunk, buffer = buffer[:body], buffer[body:]
            rows.append(([bos_token_id] if bos_token_id is not None else []) + chunk)
            if max_sequences is not None and len(rows) >= max_sequences:
                return torch.tensor(rows, dtype=torch.long)
    if not rows:
        return torch.zeros((0, seq_len), dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)


def document_rows(tokenizer, docs: Iterable[str], seq_len: int, max_rows: int | None = None,
                  bos_token_id: int | None = None) -> Int[Tensor, "batch pos"]:
    """One row per document long enough: its first tokens, never crossing into another one.

    Unlike :func:`token_sequences` (a stream cut into windows), position ``i`` of a row is
    always token ``i`` of one document (shifted by one with ``bos_token_id``), which is what a
    loss-by-position-in-context measurement needs. Documents with fewer than ``seq_len``
    tokens (``seq_len - 1`` with a BOS) are skipped; rows keep the documents' order; stops
    after ``max_rows`` rows. ``tokenizer`` is a Hugging Face tokenizer; no special tokens are
    added by it.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    body = seq_len - 1 if bos_token_id is not None else seq_len
    rows: list[list[int]] = []
    for doc in docs:
        if max_rows is not None and len(rows) >= max_rows:
            break
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(ids) >= body:
            rows.append(([bos_token_id] if bos_token_id is not None else []) + ids[:body])
    if not rows:
        return torch.zeros((0, seq_len), dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)
