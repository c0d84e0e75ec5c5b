"""The index: `Store`, the object that reads and writes an index folder (its files and format
are rag.layout's), and `open_store`, which opens the index a command's settings name with
their embedding model.

Readers never block and are never blocked: a search works on one committed state, pinned from
the moment it asks for the FAISS index until the next search (or close), so an ingest that
commits meanwhile cannot pull rows from under it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag import layout
from rag.chunking import neighbour_contexts
from rag.config import Settings
from rag.embedder import Embedder, get_embedder
from rag.errors import IndexMissing, StoreError
from rag.layout import (
    CHUNK_COLUMNS,
    DB_NAME,
    FAISS_NAME,
    FORMAT_VERSION,
    LEXICAL_NAME,
    Manifest,
    atomic_write,
    next_generation,
    pack_vector,
    stack_sentences,
    unpack_vector,
)
from rag.lexical import LEXICAL_MEMORY_MAX, Postings, Tokenizer
from rag.registry import resolve_embedding
from rag.types import Chunk, Document
from rag.vector_index import (
    SentenceIndex,
    build_index,
    faiss_module,
    holds_ids,
    read_index,
    save_index,
)

__all__ = ["DB_NAME", "FAISS_NAME", "FORMAT_VERSION", "LEXICAL_NAME", "SENTENCE_SEARCH_MAX",
           "Manifest", "Store", "open_store"]

# Sentence vectors are held in memory (bfloat16) while an index holds at most this many chunks
# (SQuAD's 3,711 chunks hold 10,324 sentences: 7.6 MiB); above it the chunks' own vectors and
# BM25 rank alone.
SENTENCE_SEARCH_MAX = 50_000


def open_store(settings: Settings, create: bool = False) -> tuple[Store, Embedder]:
    """The index `settings` name, opened with the embedding model it was (or is to be) built
    with, and that model."""

    embedder = get_embedder(resolve_embedding(settings.embedding_model, settings),
                            settings.threads)
    store = Store.open(settings.index_dir, embedder.name, embedder.fingerprint,
                       embedder.dimension, create=create)
    return store, embedder


class Store:
    """An open index. Read methods see one consistent committed state."""

    def __init__(self, index_dir: Path, db: sqlite3.Connection):
        self.dir = index_dir
        self.db = db
        self._faiss = None
        self._faiss_generation = -1
        self._lexical: Postings | None = None
        self._lexical_generation = -1
        self._sentences: SentenceIndex | None = None
        self._sentences_generation = -1
        self._tokenizer = Tokenizer()
        self._reading = False  # a read transaction pins the state the current search sees

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: Path | str, embedding_model: str, fingerprint: str,
             dimension: int, create: bool = False) -> Store:
        index_dir = Path(index_dir)
        db_path = index_dir / DB_NAME
        if index_dir.exists() and not index_dir.is_dir():
            raise StoreError(f"--index {index_dir} is a file, not a folder: point --index at "
                             "a folder (an index is a folder rag creates)")
        if not db_path.exists():
            if not create:
                raise IndexMissing(
                    f"no index at {index_dir}/: run `rag ingest PATH` first, or point --index "
                    "at an existing index")
            try:
                index_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the index folder {index_dir}/ "
                                 f"({(e.strerror or str(e)).lower()}): point --index at a "
                                 "folder you may write") from None
        try:
            try:
                db = layout.connect(db_path)
            except sqlite3.OperationalError as e:
                if create or not layout.cannot_write(e):
                    raise
                # a reader of an index it may not write
                db = layout.connect(db_path, read_only=True)
            store = cls(index_dir, db)
            layout.prepare(index_dir, db, embedding_model, fingerprint, dimension, create)
        except sqlite3.DatabaseError as e:
            raise StoreError(layout.reason(index_dir, e)) from e
        return store

    def close(self) -> None:
        self._end_read()
        self.db.close()

    def meta(self) -> dict[str, str]:
        return layout.read_meta(self.db)

    def manifest(self) -> Manifest:
        return layout.read_manifest(self.db)

    # -- writing ---------------------------------------------------------------------------

    def _begin_read(self) -> None:
        """Pin the current committed state for the reads that follow (WAL: no lock taken)."""
        self._end_read()
        self.db.execute("BEGIN DEFERRED")
        self._reading = True

    def _end_read(self) -> None:
        if self._reading:
            self._reading = False
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._end_read()
        with layout.transaction(self.db) as db:
            yield db

    @contextmanager
    def writer(self, wait_s: float = 60.0,
               notify: Callable[[str], None] | None = None) -> Iterator[Store]:
        """Hold the index's write lock: one writer at a time; readers are never blocked.
        `notify` is told once when the lock is held by another process and this one waits."""
        with layout.write_lock(self.dir, wait_s, notify):
            yield self

    def document_hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT source, sha256 FROM documents"))

    def documents_under(self, root: str) -> list[str]:
        prefix = root.rstrip(os.sep) + os.sep
        return [s for (s,) in self.db.execute("SELECT source FROM documents")
                if s.startswith(prefix)]

    def document_files(self) -> dict[str, str]:
        """source -> the file it was read from (itself, or the .jsonl holding the record)."""
        return dict(self.db.execute("SELECT source, file FROM documents"))

    def replace_documents(self, items: Iterable[tuple[Document, list[Chunk], np.ndarray,
                                                      list[tuple[bytes, bytes]]]],
                          remove: Iterable[str] = ()) -> None:
        """In one transaction: drop `remove` and any older version of each document, then
        insert each document with its chunks, their vectors, and for each chunk its
        sentences (packed by `pack_sentences`) and its tokens' codes (`pack_tokens`)."""
        with self.transaction() as db:
            for source in remove:
                self._delete(db, source)
            for doc, chunks, vectors, sentences in items:
                self._delete(db, doc.source)
                db.execute(
                    "INSERT INTO documents (source, sha256, title, text, n_chunks, file, pages, "
                    "url, metadata, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.source, doc.sha256, doc.title, doc.text, len(chunks), doc.origin,
                     json.dumps(list(doc.pages)) if doc.pages else None, doc.url or None,
                     json.dumps(doc.metadata, ensure_ascii=False) if doc.metadata else None,
                     time.time()))
                contexts = neighbour_contexts(doc.text, [(c.start, c.end) for c in chunks])
                for chunk, vec, context, (sents, tokens) in zip(chunks, vectors, contexts,
                                                                sentences):
                    cur = db.execute(
                        "INSERT INTO chunks (chunk_id, source, start, end, text, n_tokens, vector,"
                        " page, sentences, tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (chunk.chunk_id, chunk.source, chunk.start, chunk.end, chunk.text,
                         chunk.n_tokens, pack_vector(vec),
                         chunk.page, sents, tokens))
                    db.execute("INSERT INTO chunks_fts (rowid, text, context) VALUES (?, ?, ?)",
                               (cur.lastrowid, chunk.text, context))
            next_generation(db)
        layout.write_manifest(self.dir, self.db)

    @staticmethod
    def _delete(db: sqlite3.Connection, source: str) -> None:
        db.execute("DELETE FROM chunks_fts WHERE rowid IN "
                   "(SELECT id FROM chunks WHERE source = ?)", (source,))
        db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        db.execute("DELETE FROM documents WHERE source = ?", (source,))

    def chunks_without_sentences(self, limit: int, tokens: bool = False
                                 ) -> list[tuple[int, str]]:
        """(rowid, text) of up to `limit` chunks written without their sentences (or, with
        `tokens`, without their tokens' codes), where searches would use them (an index of at
        most SENTENCE_SEARCH_MAX chunks)."""
        n, = self.db.execute("SELECT count(*) FROM chunks").fetchone()
        if n > SENTENCE_SEARCH_MAX:
            return []
        lacking = "sentences IS NULL OR tokens IS NULL" if tokens else "sentences IS NULL"
        return self.db.execute(f"SELECT id, text FROM chunks WHERE {lacking} ORDER BY id "
                               "LIMIT ?", (limit,)).fetchall()

    def set_sentences(self, rows: Iterable[tuple[int, tuple[bytes, bytes | None]]]) -> None:
        """Fill in the packed sentences and token codes (rowid, (sentences, tokens)) of chunks
        that lack either, in one transaction. The chunks' text and vectors are untouched; the
        generation moves on, so that every process reads them anew."""
        with self.transaction() as db:
            # a chunk keeps the codes it has when this ingest writes none (None)
            db.executemany("UPDATE chunks SET sentences = ?, tokens = coalesce(?, tokens) "
                           "WHERE id = ? AND (sentences IS NULL OR tokens IS NULL)",
                           [(sents, tokens, rowid) for rowid, (sents, tokens) in rows])
            next_generation(db)

    # -- reading ---------------------------------------------------------------------------

    def generation(self) -> int:
        value, = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(value)

    def chunks_by_rowid(self, rowids: Iterable[int]) -> dict[int, Chunk]:
        ids = list(rowids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})", ids)
        return {r[0]: Chunk(*r[1:]) for r in rows}

    def chunks_and_vectors(self, rowids: Iterable[int]) -> dict[int, tuple[Chunk, np.ndarray]]:
        """rowid -> (chunk, its stored vector), in one read: what a search walks through."""
        ids = list(rowids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT {CHUNK_COLUMNS}, vector FROM chunks WHERE id IN ({marks})", ids)
        return {r[0]: (Chunk(*r[1:-1]), unpack_vector(r[-1])) for r in rows}

    def vectors(self, rowids: list[int]) -> np.ndarray:
        dim = int(self.meta()["dimension"])
        out = np.zeros((len(rowids), dim), dtype=np.float32)
        if not rowids:
            return out
        marks = ",".join("?" * len(rowids))
        found = {i: v for i, v in self.db.execute(
            f"SELECT id, vector FROM chunks WHERE id IN ({marks})", rowids)}
        for j, i in enumerate(rowids):
            out[j] = unpack_vector(found[i])
        return out

    def document_text(self, source: str) -> str | None:
        row = self.db.execute("SELECT text FROM documents WHERE source = ?", (source,)).fetchone()
        return row[0] if row else None

    def documents(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT source, title FROM documents ORDER BY source"))

    def all_chunks(self, source: str | None = None) -> list[tuple[int, Chunk]]:
        q = f"SELECT {CHUNK_COLUMNS} FROM chunks"
        args: tuple = ()
        if source is not None:
            q += " WHERE source = ?"
            args = (source,)
        return [(r[0], Chunk(*r[1:])) for r in self.db.execute(q + " ORDER BY source, start", args)]

    def lexical_search(self, words: Iterable[str], limit: int,
                       context_weight: float = 1.0) -> list[tuple[int, float]]:
        """(rowid, bm25) best first for any of `words`, each a phrase of its own: FTS5's
        bm25(), negated (in SQLite lower is better). A chunk's neighbouring text counts
        context_weight times as much as its own words (FTS5 sums the weighted term counts of
        both columns over the length of both). From the postings in memory where there are
        (rag.lexical: the same scores), else by FTS5."""
        words = list(dict.fromkeys(w for w in words if w.strip() and '"' not in w))
        if not words:
            return []
        postings = self.lexical_postings()
        if postings is not None:
            terms = self._tokenizer.terms(words)
            if all(len(t) == 1 for t in terms):  # else a phrase of several tokens: FTS5's
                return postings.search([t[0] for t in terms], limit, context_weight)
        rows = self.db.execute(
            "SELECT rowid, bm25(chunks_fts, 1.0, ?) AS s FROM chunks_fts "
            "WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
            (context_weight, " OR ".join(f'"{w}"' for w in words), limit))
        return [(r, -s) for r, s in rows]

    def pool_lexical(self, words: Iterable[str], rowids: Iterable[int], pool_weight: float,
                     context_weight: float = 1.0) -> list[tuple[int, float]] | None:
        """(rowid, score) of the candidates `rowids` by BM25 with each word's idf scaled by
        how few of them hold it (Postings.pool_scores), best first; None where the postings
        are not in memory or FTS5 reads a word as a phrase (then the search keeps
        `lexical_search`'s order)."""
        words = list(dict.fromkeys(w for w in words if w.strip() and '"' not in w))
        postings = self.lexical_postings()
        if postings is None or not words:
            return None
        terms = self._tokenizer.terms(words)
        if not all(len(t) == 1 for t in terms):
            return None
        return postings.pool_scores([t[0] for t in terms], list(rowids), context_weight,
                                    pool_weight)

    def token_codes(self, rowids: Iterable[int]) -> dict[int, np.ndarray]:
        """rowid -> its tokens' codes (uint8, (tokens, dimension / 8)) for those of `rowids`
        that have any, in the state the current search pinned."""
        ids = list(rowids)
        if not ids:
            return {}
        width = int(self.meta()["dimension"]) // 8
        marks = ",".join("?" * len(ids))
        try:
            rows = self.db.execute(f"SELECT id, tokens FROM chunks WHERE id IN ({marks}) AND "
                                   "length(tokens) > 0", ids).fetchall()
        except sqlite3.OperationalError:  # read-only, from before chunks held token codes
            return {}
        return {r: np.frombuffer(b, dtype=np.uint8).reshape(-1, width) for r, b in rows}

    def lexical_postings(self) -> Postings | None:
        """The full-text index's postings for the state being read, from disk or read out of
        FTS5 (and saved for the next process); None above LEXICAL_MEMORY_MAX chunks."""
        if not self._reading:
            self._begin_read()
        gen = self.generation()
        if self._lexical_generation == gen:
            return self._lexical
        n, = self.db.execute("SELECT count(*) FROM chunks").fetchone()
        postings = None
        if n <= LEXICAL_MEMORY_MAX:
            ids = self._chunk_ids()
            path = self.dir / LEXICAL_NAME
            postings = Postings.from_file(path)
            # ids are never reused: the same ids are the same chunks, whichever process wrote it
            if postings is not None and postings.generation != gen and \
                    len(np.setdiff1d(ids, postings.rowids)) <= len(ids) // 4:
                # a few rows new (an ingest into a large index): those alone read from FTS5
                postings = postings.updated(self.db, "chunks_fts", gen, ids)
            elif postings is None or postings.generation != gen or \
                    not np.array_equal(postings.rowids, ids):
                postings = Postings.build(self.db, "chunks_fts", gen)
                try:
                    atomic_write(path, postings.to_bytes())
                except OSError:
                    pass  # a read-only index still answers from memory
        self._lexical, self._lexical_generation = postings, gen
        return postings

    def _chunk_ids(self) -> np.ndarray:
        return np.fromiter((r for (r,) in self.db.execute("SELECT id FROM chunks ORDER BY id")),
                           dtype=np.int64)

    def faiss_index(self):
        """The FAISS index for the current generation, from disk or rebuilt from SQLite.
        Starts a search: the state it is read from stays pinned until the next search."""
        faiss_module()
        self._begin_read()
        gen = self.generation()
        if self._faiss is not None and self._faiss_generation == gen:
            return self._faiss
        index = read_index(self.dir, gen)
        # ids are never reused: this also catches a file written for another generation by a
        # racing process
        if index is None or not holds_ids(index, self._chunk_ids()):
            index = self._build_faiss()
            save_index(self.dir, index, gen)
        self._faiss, self._faiss_generation = index, gen
        return index

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(rowid, inner product) of the k chunks nearest `query` in the index the current
        search pinned (`faiss_index`), best first. By FAISS on one thread even where numpy
        is a little faster (0.21 against 0.24 ms at 3,711 chunks): numpy's product runs on
        OpenBLAS's threads, which then spin on the cores the question's embedding needs next
        (a search with it: embedding 2.1 -> 6.1 ms, p99 105 ms)."""
        scores, ids = self._faiss.search(query[None, :], k)
        return [(int(i), float(d)) for i, d in zip(ids[0], scores[0]) if i >= 0]

    def sentence_scores(self, query: np.ndarray, rowids: Iterable[int]
                        ) -> list[tuple[int, float]]:
        """(rowid, inner product of `query` with its best sentence) of each of `rowids`, best
        first, in the state the current search pinned; empty when the index is too large for
        sentences or some chunk has no sentence vectors yet."""
        gen = self.generation()
        if self._sentences_generation != gen:
            self._sentences, self._sentences_generation = self._load_sentences(), gen
        return self._sentences.best(query, rowids) if self._sentences else []

    def _load_sentences(self) -> SentenceIndex | None:
        try:
            n, missing = self.db.execute(
                "SELECT count(*), count(*) - count(sentences) FROM chunks").fetchone()
        except sqlite3.OperationalError:  # read-only, from before chunks held sentences
            return None
        if not n or missing or n > SENTENCE_SEARCH_MAX:
            return None
        dim = int(self.meta()["dimension"])
        rows = self.db.execute("SELECT id, sentences FROM chunks ORDER BY id").fetchall()
        counts, vectors = stack_sentences([b for _, b in rows], dim)
        return SentenceIndex(np.array([r for r, _ in rows], dtype=np.int64), counts, vectors)

    def _build_faiss(self):
        n, = self.db.execute("SELECT count(*) FROM chunks").fetchone()
        dim = int(self.meta()["dimension"])
        return build_index(dim, n, self._vector_batches)

    def _vector_batches(self, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in id order, a batch at a time: a million chunks never sit in
        memory twice."""
        cur = self.db.execute("SELECT id, vector FROM chunks ORDER BY id")
        while rows := cur.fetchmany(size):
            yield (np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows)),
                   np.vstack([unpack_vector(b) for _, b in rows]))

    def refresh(self) -> None:
        """Bring the FAISS file and the postings up to the committed state (after a write, so
        that the next search starts from files)."""
        self.faiss_index()
        self.lexical_postings()
