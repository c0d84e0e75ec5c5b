"""Question -> ranked Hits: dense (FAISS over the chunks' vectors), lexical (BM25 as SQLite FTS5
scores it) and the candidates of both by their best sentence's vector, fused, then
near-duplicates collapsed so that one sentence repeated by three outlets takes one slot and
records the other sources that carry it.

BM25 reads each chunk with its neighbours: the full-text index holds, beside a chunk's own
text, the text of the chunks before and after it (rag.store), counted at context_weight. A
question's words are often spread over a passage, while the answer sits in one of its chunks.
In the fusion BM25 scores the candidates (the union of both lists' top 50) with each word's
idf scaled by how few of them hold it (pool_idf_weight, Store.pool_lexical): where the
candidates are all about one thing, the words they all share tell none of them apart.

Fusion is a weighted sum of each list's scores standardised within the list (z-scores; a
passage one list did not return gets that list's lowest), at dense_weight for two lists and
list_weights (chunk vectors, BM25, sentences, late interaction) for those a search has. The
third list ranks the candidates by their best sentence's vector (Store.sentence_scores): a
question usually asks about one sentence, and a chunk's single vector blurs it with the rest.
Late interaction (Settings.late_interaction, off by default) adds a fourth: each question
token's best match among a candidate's token codes, summed (`late_interaction`). Then the best
`rerank` fused passages are re-ordered by their best single sentence (`rerank_by_sentence`).
The numbers named here are rag.config.RetrievalTuning's (Settings.retrieval).

What each step measures on SQuAD, and the alternatives measured and dropped:
docs/retrieval.md."""

from __future__ import annotations

import bisect
import re
from dataclasses import replace

import numpy as np

from rag.chunking import split_sentences
from rag.config import RetrievalTuning
from rag.embedder import Embedder
from rag.store import Store
from rag.text import rarity, search_words, whole_words
from rag.types import Hit

RRF_K = 60  # reciprocal rank fusion's constant, as its authors set it
# BM25 re-weighs the candidates' words (pool_idf_weight) for a question of at most this many
# distinct words (SQuAD's longest has 17). A page pasted as the question shares every word
# with every candidate, and the few words left after the scaling rank them by chance; its
# words count as BM25 counts them.
POOL_IDF_MAX_WORDS = 64
FUSIONS = ("zscore", "rrf")
MODES = ("hybrid", "dense", "lexical")
TUNED = RetrievalTuning()

def rerank_by_sentence(question: str, rowids: list[int], chunks: dict, fused: dict[int, float],
                       weight: float = RetrievalTuning.sentence_weight) -> dict[int, float]:
    """Fused scores with the best `rowids` moved by how much of the question one sentence of
    theirs holds. The answer to a question usually sits in a single sentence that repeats
    most of its words, while BM25 and the passage's vector count words anywhere in it. Each
    question word weighs by its rarity among these passages (`rarity` within the pool: the
    words every candidate shares decide little between them); a passage's test is its best
    sentence's sum. Standardised within the pool and added at `weight`, in the fused
    scores' own spread, so the order below the pool and the scale of `score` are kept."""
    words = set(search_words(question))
    if len(rowids) < 2 or not words:
        return fused
    find_any_case = None
    sentences = []
    for r in rowids:
        text = chunks[r].text
        low = text.lower()
        if len(low) == len(text):  # lowering kept every offset
            found = whole_words(low, words)
        else:  # a few letters lengthen when lowered: match the text itself
            find_any_case = find_any_case or re.compile(
                r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b", re.IGNORECASE)
            found = [(m.start(), m.group().lower()) for m in find_any_case.finditer(text)]
        ends = [b for _, b in split_sentences(text)] if found else []
        per = [set() for _ in ends]
        for at, word in found:
            per[min(bisect.bisect_right(ends, at), len(ends) - 1)].add(word)
        sentences.append(per)
    rare = rarity(words, [set().union(*ss) for ss in sentences])
    best = np.array([max((sum(rare[w] for w in s) for s in ss), default=0.0)
                     for ss in sentences])
    if best.std() == 0:
        return fused
    base = np.array([fused[r] for r in rowids])
    moved = base + weight * base.std() * (best - best.mean()) / best.std()
    return {**fused, **dict(zip(rowids, moved.tolist()))}


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, mode: str = "hybrid",
                 fusion: str = "zscore", sentences: bool = True, late: bool = False,
                 pool_idf: bool = True, tuning: RetrievalTuning = TUNED):
        """`sentences`: rank the candidates by their best sentence too, where the index
        holds sentence vectors (hybrid mode); `late`: and by late interaction, where it holds
        token codes (Settings.late_interaction, off by default); `pool_idf`: BM25 re-weighs
        the candidates by the words few of them share. Each can be turned off, for comparison.
        `tuning`: the weights and cut-offs (Settings.retrieval)."""
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}")
        self.store = store
        self.embedder = embedder
        self.mode = mode
        self.fusion = fusion
        self.sentences = sentences
        self.late = late
        self.pool_idf = pool_idf
        self.tuning = tuning

    def search(self, query: str, k: int = 5, pool: int = 50,
               collapse: bool = True) -> list[Hit]:
        index = self.store.faiss_index()
        if index.ntotal == 0:
            return []
        qvec, qtokens = self.embedder.embed_question(query)
        pool = min(max(pool, k * 4), index.ntotal)
        dense: list[tuple[int, float]] = []
        sentences: list[tuple[int, float]] = []
        late: list[tuple[int, float]] = []
        if self.mode in ("hybrid", "dense"):
            dense = self.store.nearest(qvec, pool)
        lexical: list[tuple[int, float]] = []
        words = search_words(query)
        if self.mode in ("hybrid", "lexical"):
            lexical = self.store.lexical_search(words, pool, self.tuning.context_weight)
        if self.mode == "hybrid":
            candidates = list(dict.fromkeys(r for r, _ in dense + lexical))
            if self.pool_idf and len(set(words)) <= POOL_IDF_MAX_WORDS:
                lexical = self.store.pool_lexical(words, candidates,
                                                  self.tuning.pool_idf_weight,
                                                  self.tuning.context_weight) or lexical
            if self.sentences:  # the candidates, by their best sentence
                sentences = self.store.sentence_scores(qvec, candidates)[:pool]
            if self.late and qtokens is not None and len(qtokens):
                late = late_interaction(self.store, self.embedder, qtokens, candidates)
        fused = fuse(dense, lexical, self.fusion, sentences, late, self.tuning)
        order = sorted(fused, key=lambda r: (-fused[r], r))
        # Chunks and vectors are read as the walk below reaches them, in one query: it stops
        # within the first 2k of the ~80 fused passages (SQuAD, 200 searches: one read each,
        # 0.13 ms, against 0.59 ms for every fused passage's chunk and then its vector)
        rerank = self.tuning.rerank
        rows = self.store.chunks_and_vectors(order[:max(rerank, 2 * k)])
        if self.mode == "hybrid" and self.tuning.sentence_weight:
            fused = rerank_by_sentence(query, order[:rerank], {r: rows[r][0] for r in
                                                                order[:rerank]}, fused,
                                       self.tuning.sentence_weight)
            order = sorted(fused, key=lambda r: (-fused[r], r))
        dense_rank = {r: i + 1 for i, (r, _) in enumerate(dense)}
        lexical_rank = {r: i + 1 for i, (r, _) in enumerate(lexical)}
        hits: list[Hit] = []
        kept_vectors: list[np.ndarray] = []
        for j, rowid in enumerate(order):
            if rowid not in rows:
                rows.update(self.store.chunks_and_vectors(
                    [r for r in order[j:j + 2 * k] if r not in rows]))
            chunk, vector = rows[rowid]
            hit = Hit(rank=0, chunk=chunk, score=float(fused[rowid]),
                      dense_rank=dense_rank.get(rowid), lexical_rank=lexical_rank.get(rowid),
                      similarity=float(vector @ qvec))
            if collapse and kept_vectors:
                cos = np.asarray(kept_vectors) @ vector
                best = int(np.argmax(cos))
                if cos[best] >= self.tuning.duplicate_cosine:
                    kept = hits[best]
                    if hit.chunk.source != kept.chunk.source and \
                            hit.chunk.source not in kept.also_in:
                        hits[best] = replace(kept, also_in=kept.also_in + (hit.chunk.source,))
                    continue
            hits.append(hit)
            kept_vectors.append(vector)
            if len(hits) >= k:
                break
        return [replace(h, rank=i + 1) for i, h in enumerate(hits)]


def late_interaction(store: Store, embedder: Embedder, qtokens: np.ndarray,
                     candidates: list[int]) -> list[tuple[int, float]]:
    """(rowid, score) of the candidates, best first, by late interaction: each question
    token's best match among a passage's tokens, summed (ColBERT's MaxSim, over the
    embedding model's own last states: the passages' kept as sign bits at ingest). It reads
    which passage says what the question asks where one vector per passage blurs it: "Which
    hotel did the Broncos use?" against "... stayed at the Santa Clara Marriott". Empty
    unless every candidate has codes (an older index, or a model rag does not run itself),
    so that one search never mixes passages scored and not."""
    codes = store.token_codes(candidates)
    if not candidates or len(codes) < len(candidates):
        return []
    scores = embedder.late_scores(qtokens, [codes[r] for r in candidates])
    return sorted(zip(candidates, scores.tolist()), key=lambda t: (-t[1], t[0]))


def fuse(dense: list[tuple[int, float]], lexical: list[tuple[int, float]],
         fusion: str = "zscore", sentences: list[tuple[int, float]] = (),
         late: list[tuple[int, float]] = (),
         tuning: RetrievalTuning = TUNED) -> dict[int, float]:
    """rowid -> fused score, from (rowid, score) lists each ordered best first: the chunks by
    their vectors, by BM25, and (where the index has what they need) by their best sentence's
    vector and by late interaction."""
    fused: dict[int, float] = {}
    if fusion == "rrf":
        for ranking in (dense, lexical, sentences, late):
            for rank, (rowid, _) in enumerate(ranking):
                fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        return fused
    weights = tuning.list_weights if sentences or late else \
        (tuning.dense_weight, 1 - tuning.dense_weight, 0, 0)
    lists = [(w, ranking) for w, ranking in zip(weights, (dense, lexical, sentences, late))
             if ranking]
    if len(lists) < 2:  # one list: its own order
        return {rowid: score for rowid, score in lists[0][1]} if lists else {}
    standardised = []
    for weight, ranking in lists:
        values = np.array([score for _, score in ranking], dtype=np.float64)
        z = (values - values.mean()) / (values.std() or 1.0)
        # Python floats: the sums below on numpy scalars took 2x as long, to the same values
        standardised.append((weight, dict(zip((r for r, _ in ranking), z.tolist())),
                             float(z.min())))
    for rowid in set().union(*(zs.keys() for _, zs, _ in standardised)):
        fused[rowid] = sum(w * zs.get(rowid, low) for w, zs, low in standardised)
    return fused
