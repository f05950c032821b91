"""Search results: the top-k document ids and scores of each query."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class SearchResults:
    """Top-k hits per query, best first: `ids[q]` document ids, `scores[q]` their float32 scores.

    Only documents scoring > 0 (sharing a term with the query) are hits, so a query may have fewer
    than k, and an empty query none.
    """

    ids: list[list[str]]
    scores: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, query: int) -> list[tuple[str, float]]:
        """(document id, score) pairs of one query."""
        return list(zip(self.ids[query], self.scores[query].tolist()))

    def to_run(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """`{query id: {doc id: score}}`, the run format of `evaluation.evaluate` and pytrec_eval."""
        if len(query_ids) != len(self):
            raise InputError(f"{len(query_ids)} query ids for {len(self)} result lists")
        return {str(q): dict(self.hits(i)) for i, q in enumerate(query_ids)}

    def to_trec(self, query_ids: Sequence[str | int], tag: str = "spladerunner") -> Iterator[str]:
        """TREC run lines `qid Q0 docid rank score tag` (no newline), the input of trec_eval.

        Scores carry 9 significant digits, enough to tell any two float32 scores apart: trec_eval re-ranks
        by score, so rounding them into ties would change its ranking and metrics.
        """
        if len(query_ids) != len(self):
            raise InputError(f"{len(query_ids)} query ids for {len(self)} result lists")
        for position, qid in enumerate(query_ids):
            for rank, (doc, score) in enumerate(self.hits(position), 1):
                yield f"{qid} Q0 {doc} {rank} {score:.9g} {tag}"

    @classmethod
    def from_slots(cls, slots: np.ndarray, scores: np.ndarray, ids: Sequence[str] | np.ndarray) -> SearchResults:
        """Results from `top_k` output: document slots [n_queries, k] (-1 padded) indexing `ids`, and scores.

        ids: a list, or an object array of them (indexed in one numpy call: much faster at large k).
        """
        counts = np.count_nonzero(slots >= 0, axis=1).tolist()
        table = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=object)
        hit_ids = table[np.maximum(slots, 0)].tolist() if len(table) else [[] for _ in counts]  # padding cut below
        return cls([row[:n] for row, n in zip(hit_ids, counts)],
                   [row[:n] for row, n in zip(scores.astype(np.float32), counts)])
