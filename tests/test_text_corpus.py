"""utils.text_corpus: the shippable English corpus is deterministic and well-formed."""

import torch

from utils import text_corpus


class CharTokenizer:
    """A stand-in for a Hugging Face tokenizer: one id per character."""

    def __call__(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [ord(c) for c in text]}


def test_pydoc_topics_are_prose_in_a_fixed_order():
    topics = text_corpus.pydoc_topics()
    assert len(topics) > 50
    assert sum(map(len, topics)) > 300_000
    assert topics == text_corpus.pydoc_topics()
    assert all(t == t.strip() and t for t in topics)


def test_stdlib_docstrings_from_a_folder(tmp_path):
    (tmp_path / "b.py").write_text('"""Module b, long enough to keep."""\n'
                                   'def f():\n    """Short."""\n')
    (tmp_path / "a.py").write_text('class A:\n    """Class A has a docstring that is kept."""\n')
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "c.py").write_text('"""Tests are skipped entirely, always."""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    docs = text_corpus.stdlib_docstrings(min_chars=20, root=tmp_path)
    assert docs == ["Class A has a docstring that is kept.", "Module b, long enough to keep."]


def test_split_is_per_document_and_deterministic():
    docs = [f"document number {i}" for i in range(400)]
    train, test = text_corpus.split_documents(docs, test_fraction=0.25, seed=3)
    assert sorted(train + test) == sorted(docs)
    assert 50 < len(test) < 150
    # A document's side does not depend on what else is in the list.
    _, test_half = text_corpus.split_documents(docs[::2], test_fraction=0.25, seed=3)
    assert test_half == [d for d in test if d in set(docs[::2])]
    assert text_corpus.split_documents(docs, 0.25, seed=4)[1] != test


def test_token_sequences_are_contiguous_windows():
    rows = text_corpus.token_sequences(CharTokenizer(), ["abcdef", "ghij"], seq_len=4,
                                       bos_token_id=1)
    stream = [ord(c) for c in "abcdef\n\nghij"]
    assert rows.dtype == torch.long and rows.shape == (4, 4)
    assert (rows[:, 0] == 1).all()
    assert rows[:, 1:].flatten().tolist() == stream[:12]
    no_bos = text_corpus.token_sequences(CharTokenizer(), ["abcdef", "ghij"], seq_len=5,
                                         max_sequences=1)
    assert no_bos.tolist() == [stream[:5]]
    assert text_corpus.token_sequences(CharTokenizer(), ["ab"], seq_len=8).shape == (0, 8)


def test_document_rows_keep_each_row_inside_one_document():
    docs = ["abcdef", "xy", "ghijkl", "mnopqrs"]
    rows = text_corpus.document_rows(CharTokenizer(), docs, seq_len=5, bos_token_id=1)
    assert rows.dtype == torch.long and rows.shape == (3, 5)
    assert (rows[:, 0] == 1).all()
    assert [bytes(r[1:].tolist()).decode() for r in rows] == ["abcd", "ghij", "mnop"]
    two = text_corpus.document_rows(CharTokenizer(), docs, seq_len=6, max_rows=2)
    assert [bytes(r.tolist()).decode() for r in two] == ["abcdef", "ghijkl"]
    assert text_corpus.document_rows(CharTokenizer(), ["ab"], seq_len=8).shape == (0, 8)
