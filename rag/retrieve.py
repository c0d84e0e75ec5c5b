"""Question -> ranked Hits: dense (FAISS) and lexical (SQLite FTS5 BM25) fused by reciprocal
rank, then near-duplicates collapsed so that one sentence repeated by three outlets takes one
slot and records the other sources that carry it."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from rag.embedder import Embedder
from rag.store import Store
from rag.types import Hit

RRF_K = 60
DUPLICATE_COSINE = 0.92
MODES = ("hybrid", "dense", "lexical")

STOPWORDS = frozenset("""a an and are as at be been being but by did do does for from had has
have how i if in into is it its of on or over that the their them then there these they this
those to was were what when where which who whom whose why will with would you your""".split())


def lexical_query(text: str) -> str:
    """An FTS5 MATCH expression: the question's content words, any of them, each quoted."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, mode: str = "hybrid"):
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}")
        self.store = store
        self.embedder = embedder
        self.mode = mode

    def search(self, query: str, k: int = 5, pool: int = 50,
               collapse: bool = True) -> list[Hit]:
        index = self.store.faiss_index()
        if index.ntotal == 0:
            return []
        qvec = self.embedder.embed([query])[0]
        pool = min(max(pool, k * 4), index.ntotal)
        dense: list[int] = []
        if self.mode in ("hybrid", "dense"):
            _, ids = index.search(qvec[None, :], pool)
            dense = [int(i) for i in ids[0] if i >= 0]
        lexical: list[int] = []
        if self.mode in ("hybrid", "lexical"):
            lexical = [r for r, _ in self.store.lexical_search(lexical_query(query), pool)]
        fused: dict[int, float] = {}
        for ranking in (dense, lexical):
            for rank, rowid in enumerate(ranking):
                fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        order = sorted(fused, key=lambda r: (-fused[r], r))
        chunks = self.store.chunks_by_rowid(order)
        vectors = self.store.vectors(order)
        sims = vectors @ qvec
        dense_rank = {r: i + 1 for i, r in enumerate(dense)}
        lexical_rank = {r: i + 1 for i, r in enumerate(lexical)}
        hits: list[Hit] = []
        kept_vectors: list[np.ndarray] = []
        for j, rowid in enumerate(order):
            hit = Hit(rank=0, chunk=chunks[rowid], score=float(fused[rowid]),
                      dense_rank=dense_rank.get(rowid), lexical_rank=lexical_rank.get(rowid),
                      similarity=float(sims[j]))
            if collapse and kept_vectors:
                cos = np.asarray(kept_vectors) @ vectors[j]
                best = int(np.argmax(cos))
                if cos[best] >= DUPLICATE_COSINE:
                    kept = hits[best]
                    if hit.chunk.source != kept.chunk.source and \
                            hit.chunk.source not in kept.also_in:
                        hits[best] = replace(kept, also_in=kept.also_in + (hit.chunk.source,))
                    continue
            hits.append(hit)
            kept_vectors.append(vectors[j])
            if len(hits) >= k:
                break
        return [replace(h, rank=i + 1) for i, h in enumerate(hits)]
