"""Random sequences of add / replace / delete / search / compact / save / load on both indexes, checked
after every step against a brute-force model (a dict of documents in tie order)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_index_reliability import brute_force, rows_of, sparse_batch, sparsembed_batch

from spladerunner.retrieval import SparseIndex
from spladerunner.sparsembed_index import SparsEmbedIndex

IDS = [f"doc{i}" for i in range(12)]
SETTINGS = settings(max_examples=25, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class IndexModel(RuleBasedStateMachine):
    """One index and the documents it should hold; subclasses choose the index type."""

    index_type: type = SparseIndex
    make = staticmethod(sparse_batch)

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.index = self.index_type()
        self.documents: dict[str, dict] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="index-fuzz-"))

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)

    @rule(count=st.integers(1, 4), replace=st.booleans())
    def add(self, count: int, replace: bool) -> None:
        ids = [str(i) for i in self.rng.choice(IDS, size=count, replace=False)]
        vectors = self.make(self.rng, count)
        taken = [i for i in ids if i in self.documents]
        try:
            self.index.add_vectors(vectors, ids, replace=replace)
        except ValueError as exc:
            assert taken and not replace and "already indexed" in str(exc)
            return
        assert replace or not taken
        for doc_id in ids:
            self.documents.pop(doc_id, None)  # a replaced document moves to the end of the tie order
        self.documents.update(zip(ids, rows_of(vectors)))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True))
        removed = self.index.delete(ids, missing_ok=True)
        assert removed == sum(i in self.documents for i in ids)
        for doc_id in ids:
            self.documents.pop(doc_id, None)

    @precondition(lambda self: self.index.vocab_size is not None)
    @rule()
    def compact(self) -> None:
        self.index.compact()

    @precondition(lambda self: self.index.vocab_size is not None)
    @rule(mmap=st.booleans())
    def save_and_load(self, mmap: bool) -> None:
        self.index = self.index_type.load(self.index.save(self.folder / "index"), mmap=mmap)

    @rule(k=st.integers(1, 15))
    def search(self, k: int) -> None:
        queries = self.make(self.rng, 3)
        assert self.index.search(queries, k=k).ids == brute_force(queries, self.documents, k)

    @invariant()
    def same_documents(self) -> None:
        if hasattr(self, "index"):
            assert self.index.ids == list(self.documents) and len(self.index) == len(self.documents)


class SparsEmbedIndexModel(IndexModel):
    index_type = SparsEmbedIndex
    make = staticmethod(sparsembed_batch)


TestSparseIndexAgainstModel = IndexModel.TestCase
TestSparseIndexAgainstModel.settings = SETTINGS
TestSparsEmbedIndexAgainstModel = SparsEmbedIndexModel.TestCase
TestSparsEmbedIndexAgainstModel.settings = SETTINGS
