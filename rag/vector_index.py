"""The vector indexes a search holds in memory: FAISS over the chunks' vectors (its kind chosen
by the index's size, IVF tuned at build time; its file in the index folder), and every chunk's
sentence vectors (`SentenceIndex`). `rag.store.Store` keeps them in step with the database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from rag.layout import FAISS_NAME, atomic_write, temporary, widen


class SentenceIndex:
    """Every chunk's sentence vectors in memory (bfloat16), chunk after chunk in rowid order.
    Only the chunks a search already holds are scored: their best sentences ranked among
    the candidates the chunk vectors and BM25 found recall as much on SQuAD (all even
    questions, recall@5 0.969 both ways) as a search over every sentence, in 0.05 ms against
    0.7 ms for FAISS over SQuAD's 10,324."""

    def __init__(self, rowids: np.ndarray, counts: np.ndarray, vectors: np.ndarray):
        self.rowids = rowids
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.vectors = vectors

    def best(self, query: np.ndarray, rowids: Iterable[int]) -> list[tuple[int, float]]:
        """(rowid, its best sentence's inner product with `query`) of those of `rowids` that
        have sentences, best first (ties by rowid)."""
        ids = np.fromiter(rowids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.rowids, ids), len(self.rowids) - 1)
        keep = (self.rowids[at] == ids) & (self.starts[at + 1] > self.starts[at])
        ids, at = ids[keep], at[keep]
        if not len(ids):
            return []
        lengths = self.starts[at + 1] - self.starts[at]
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # each chunk's first row below
        rows = np.repeat(self.starts[at] - first, lengths) + np.arange(lengths.sum())
        # einsum, not `@`: numpy's product would start OpenBLAS's threads, which then spin on
        # the cores the next question's embedding needs (see rag.store.Store.nearest)
        scores = np.einsum("ij,j->i", widen(self.vectors[rows]), query.astype(np.float32))
        best = np.maximum.reduceat(scores, first)
        order = np.lexsort((ids, -best))
        return list(zip(ids[order].tolist(), best[order].tolist()))


# -- the kind of FAISS index, by size ---------------------------------------------------------
#
# Measured on this machine (bench/perf.py, bench/results.md): exact search over n 384-d vectors
# costs about 0.15 ms per 1,000 vectors per query, so up to EXACT_MAX_VECTORS it stays within a
# few milliseconds and has perfect recall. Above it: an inverted file (IVF) whose vectors are
# stored as 8-bit scalars (SQ8, a quarter of float32: 1M chunks in ~0.4 GB instead of 1.5 GB),
# probed until recall@10 against exact search reaches IVF_TARGET_RECALL on a sample of the
# index's own vectors. IVF rather than HNSW: it trains and adds a million vectors in minutes on
# two cores, holds a quarter of the memory, and its one knob (nprobe) is tuned at build time.
EXACT_MAX_VECTORS = 50_000
IVF_TARGET_RECALL = 0.97
# From 16: SQuAD questions over 100k vectors reached recall@10 0.951 at nprobe 8, 0.969 at 16
# (bench/results.json), while the perturbed vectors below were already content at 8.
IVF_NPROBES = (16, 24, 32, 48, 64, 96, 128, 192, 256)
TUNE_QUERIES = 256
# Perturbed copies of stored vectors stand in for questions: cosine ~0.6 to their source,
# as real SQuAD questions are to their best passage (median 0.64).
TUNE_NOISE = 0.07


def index_kind(n_vectors: int) -> str:
    return "flat" if n_vectors <= EXACT_MAX_VECTORS else "ivf-sq8"


def ivf_lists(n_vectors: int) -> int:
    """Inverted lists: ~4 sqrt(n) (a power of two), with >= 64 vectors per list."""
    lists = 1 << max(4, int(round(np.log2(4 * np.sqrt(max(n_vectors, 1))))))
    return max(16, min(lists, n_vectors // 64))


def build_index(dim: int, n_vectors: int,
                batches: Iterable[tuple[np.ndarray, np.ndarray]] | Callable[[], Iterable],
                kind: str | None = None):
    """A FAISS index (inner product, ids = chunk row ids) over `batches` of (ids, vectors).
    `batches` may be a callable returning a fresh iterable: IVF reads the vectors twice
    (train, then add). Building uses the free cores; searching goes back to one thread."""
    from rag.config import auto_threads

    faiss = faiss_module()
    faiss.omp_set_num_threads(auto_threads())
    try:
        return _build_index(faiss, dim, n_vectors, batches, kind)
    finally:
        faiss.omp_set_num_threads(1)


def faiss_module():
    """faiss, set to search on one thread: `rag` asks one question at a time, and for one
    query OpenMP's start-up costs more than the search (4,000 chunks: 8 ms on two threads,
    0.1 ms on one, measured here)."""
    import faiss

    global _FAISS_READY
    if not _FAISS_READY:
        faiss.omp_set_num_threads(1)
        _FAISS_READY = True
    return faiss


_FAISS_READY = False


def _build_index(faiss, dim: int, n_vectors: int, batches, kind: str | None):
    kind = kind or index_kind(n_vectors)
    def fresh():
        return batches() if callable(batches) else batches
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        for ids, vecs in fresh():
            index.add_with_ids(vecs, ids)
        return index
    if kind != "ivf-sq8":
        raise ValueError(f"unknown index kind {kind!r}")
    lists = ivf_lists(n_vectors)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 10  # k-means converges enough for search; 25 (default) triples the build
    rng = np.random.default_rng(0)
    train_n = min(n_vectors, 48 * lists)  # faiss asks for >= 39 a list
    take = np.sort(rng.choice(n_vectors, train_n, replace=False))
    queries_at = np.sort(rng.choice(n_vectors, min(TUNE_QUERIES, n_vectors), replace=False))
    train, queries = [], []
    seen = 0
    source = fresh()
    if not callable(batches):  # one pass only: keep what training and tuning need
        source = list(source)
    for ids, vecs in source:
        rows = np.arange(seen, seen + len(ids))
        train.append(vecs[np.isin(rows, take)])
        queries.append(vecs[np.isin(rows, queries_at)])
        seen += len(ids)
    ivf.train(np.vstack(train))
    del train
    queries = np.vstack(queries)
    queries = queries + rng.normal(scale=TUNE_NOISE, size=queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = 10
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    index = faiss.IndexIDMap2(ivf)
    for ids, vecs in (source if isinstance(source, list) else fresh()):
        index.add_with_ids(vecs, ids)
        s, i = faiss.knn(queries, vecs, k, metric=faiss.METRIC_INNER_PRODUCT)
        both_s = np.hstack([best_s, s])
        both_i = np.hstack([best_i, ids[i]])
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(both_s, top, 1)
        best_i = np.take_along_axis(both_i, top, 1)
    ivf.nprobe = tune_nprobe(index, ivf, queries, best_i, IVF_TARGET_RECALL)
    return index


def tune_nprobe(index, ivf, queries: np.ndarray, exact_ids: np.ndarray, target: float) -> int:
    """The smallest nprobe whose recall@k against `exact_ids` reaches `target`."""
    k = exact_ids.shape[1]
    for nprobe in IVF_NPROBES:
        if nprobe >= ivf.nlist:
            return ivf.nlist
        ivf.nprobe = nprobe
        _, found = index.search(queries, k)
        if recall_at(found, exact_ids) >= target:
            return nprobe
    return IVF_NPROBES[-1]


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of `exact` that appears in the same row of `found`."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(e[e >= 0].tolist()))
               for f, e in zip(found, exact))
    return hits / max(1, int((exact >= 0).sum()))


def read_index(index_dir: Path, generation: int):
    """The FAISS file of the index in `index_dir` if it is tagged with `generation`, else
    None (missing, stale or unreadable)."""
    faiss = faiss_module()
    path = index_dir / FAISS_NAME
    tag = index_dir / (FAISS_NAME + ".generation")
    try:
        if path.exists() and tag.exists() and tag.read_text().strip() == str(generation):
            return faiss.read_index(str(path))
    except (RuntimeError, OSError):
        pass
    return None


def save_index(index_dir: Path, index, generation: int) -> None:
    """Write the FAISS file and its generation tag atomically; where it cannot be written (a
    full disk, a read-only folder) the index still answers from memory."""
    import faiss

    path = index_dir / FAISS_NAME
    tmp = temporary(path)
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        atomic_write(index_dir / (FAISS_NAME + ".generation"), str(generation).encode())
    except (OSError, RuntimeError):  # faiss says RuntimeError for a full disk
        try:
            tmp.unlink(missing_ok=True)  # a read-only index still answers from memory
        except OSError:
            pass


def holds_ids(index, ids: np.ndarray) -> bool:
    """The FAISS index holds exactly the chunk row ids `ids` (sorted)."""
    import faiss

    if index.ntotal != len(ids):
        return False
    try:
        held = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    except (AttributeError, RuntimeError):
        return False
    return bool(np.array_equal(np.sort(held), ids))
