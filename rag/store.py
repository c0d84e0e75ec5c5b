"""The index on disk: metadata and vectors in SQLite (the truth), a FAISS file as a cache.

Layout of an index folder:
    rag.sqlite      documents, chunks (with their vectors), a full-text index, the manifest
    vectors.faiss   FAISS index over the chunk vectors, tagged with the generation it holds
    lexical.npz     the full-text index's postings for BM25 in memory (rag.lexical), a cache
                    tagged with its generation, as vectors.faiss
    manifest.json   a human-readable copy of the manifest
    write.lock      held by the one process that writes

Every write is one SQLite transaction, so a kill at any moment leaves the last committed state.
The FAISS file is rewritten atomically (temporary file + rename) after each commit and is
rebuilt from SQLite whenever its generation or its set of ids does not match. Chunk ids are
never reused (AUTOINCREMENT), so the same ids mean the same vectors.

Readers never block and are never blocked: a search works on one committed state, pinned from
the moment it asks for the FAISS index until the next search (or close), so an ingest that
commits meanwhile cannot pull rows from under it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.chunking import neighbour_contexts
from rag.errors import IndexLocked, IndexMismatch, IndexMissing, StoreError
from rag.lexical import LEXICAL_MEMORY_MAX, TOKENIZE, Postings, Tokenizer
from rag.types import Chunk, Document

# 2: documents know the file they came from (JSON Lines records), their pages, url and
#    metadata; chunks carry their page; chunk ids are unique per document, not overall (two
#    copies of one file are two documents); row ids are never reused.
# 3: the full-text index holds each chunk's neighbouring text beside its own (a column of
#    its own); a format-2 index is upgraded in place on opening, with no re-embedding.
FORMAT_VERSION = 3
UPGRADABLE_FROM = 2
DB_NAME = "rag.sqlite"
FAISS_NAME = "vectors.faiss"
LEXICAL_NAME = "lexical.npz"

# Each chunk's own text, and beside it the text of its neighbours (rag.chunking.
# neighbour_contexts): a question whose words are spread over a passage finds its chunks.
FTS_SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, context, "
              f"tokenize='{TOKENIZE}')")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL,
    n_chunks INTEGER NOT NULL, file TEXT NOT NULL, pages TEXT, url TEXT, metadata TEXT,
    ingested_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS documents_file ON documents(file);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL, source TEXT NOT NULL
        REFERENCES documents(source) ON DELETE CASCADE,
    start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL, vector BLOB NOT NULL, page INTEGER, sentences BLOB, tokens BLOB,
    UNIQUE (source, chunk_id));
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
{FTS_SCHEMA};
"""
CHUNK_COLUMNS = "id, chunk_id, source, start, end, text, n_tokens, page"
# Sentence vectors are held in memory (bfloat16) while an index holds at most this many chunks
# (SQuAD's 3,711 chunks hold 10,324 sentences: 7.6 MiB); above it the chunks' own vectors and
# BM25 rank alone.
SENTENCE_SEARCH_MAX = 50_000
# What a search reads beside a chunk's text and vector, added to older indexes when opened:
# its sentences (`pack_sentences`) and its tokens' codes for late interaction
# (rag.minilm.token_codes: 48 bytes a token, ~2.6 KiB a SQuAD chunk; empty where the
# embedding model is not one rag runs itself)
READ_COLUMNS = ("sentences", "tokens")
LOCK_WAIT_S = 30  # how long an opening or a write waits for another process's lock


def _journal_to_wal(db: sqlite3.Connection, deadline: float) -> None:
    """Switch to write-ahead logging. Two processes creating one index at once both ask for it;
    SQLite answers the loser "database is locked" at once, without waiting out the busy
    timeout, so it is asked again until the other has finished (or the deadline passes)."""
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            waiting = "locked" in str(e) or "busy" in str(e)
            if not waiting or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _connect(db_path: Path, read_only: bool = False) -> sqlite3.Connection:
    """The index's database in write-ahead logging; `read_only`: as it stands on disk, for a
    process that may not write the folder (WAL's shared-memory file cannot be made there).
    Then nothing may write it meanwhile: such a folder is read by those who cannot write it."""
    if read_only:
        from urllib.parse import quote

        return sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?immutable=1", uri=True,
                               isolation_level=None, check_same_thread=False)
    db = sqlite3.connect(db_path, timeout=LOCK_WAIT_S, isolation_level=None,
                         check_same_thread=False)
    _journal_to_wal(db, deadline=time.monotonic() + LOCK_WAIT_S)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _cannot_write(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _reason(index_dir: Path, e: sqlite3.Error) -> str:
    """One line on what is wrong with an index, advising to rebuild only a damaged one."""
    text = str(e)
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (f"{index_dir}/{DB_NAME} is damaged ({text}): ingest the documents again into "
                "a new --index folder (keep the damaged one to inspect it)")
    if _cannot_write(e):
        return (f"{index_dir}/ cannot be written here ({text}): ingest as a user who may "
                "write it, or into another --index folder; the index is unchanged")
    if "disk is full" in low or "no space" in low:
        return (f"{index_dir}/: the disk is full ({text}); the index keeps what was "
                "committed: free some space and run the same command again")
    if "locked" in low or "busy" in low:
        return (f"{index_dir}/ is busy in another process ({text}): wait for it to finish "
                "and try again")
    return f"{index_dir}/{DB_NAME} could not be read ({text})"


def describe_error(index_dir: Path, e: sqlite3.Error | OSError) -> str:
    """One line, for the command line, on an error raised while an open index was read or
    written (a damaged page, a full disk)."""
    if isinstance(e, OSError):
        text = (e.strerror or str(e)).lower()
        if e.errno == 28:  # ENOSPC
            return _reason(index_dir, sqlite3.OperationalError("database or disk is full"))
        return f"{index_dir}/ could not be read or written ({text})"
    return _reason(index_dir, e)


@dataclass(frozen=True)
class Manifest:
    format_version: int
    embedding_model: str
    embedding_fingerprint: str
    dimension: int
    generation: int
    n_documents: int
    n_chunks: int

    def as_json(self) -> dict:
        return self.__dict__.copy()


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
                db = _connect(db_path)
            except sqlite3.OperationalError as e:
                if create or not _cannot_write(e):
                    raise
                db = _connect(db_path, read_only=True)  # a reader of an index it may not write
            store = cls(index_dir, db)
            store._check_or_init(embedding_model, fingerprint, dimension, create)
        except sqlite3.DatabaseError as e:
            raise StoreError(_reason(index_dir, e)) from e
        return store

    def _check_or_init(self, model: str, fingerprint: str, dimension: int, create: bool) -> None:
        meta = self.meta()
        if meta:
            if meta.get("format_version") == str(UPGRADABLE_FROM):
                self._upgrade_full_text()
                meta = self.meta()
            self._check_format(meta)  # before the schema: an old index may lack its columns
        if create:
            self.db.executescript(SCHEMA)
        if not meta:
            if not create:
                raise IndexMissing(f"{self.dir}/ holds no index yet: run `rag ingest PATH`")
            with self.transaction():  # OR IGNORE: another process may be creating it too
                for k, v in {"format_version": FORMAT_VERSION, "embedding_model": model,
                             "embedding_fingerprint": fingerprint, "dimension": dimension,
                             "generation": 0}.items():
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (k, str(v)))
            meta = self.meta()
        self._check_format(meta)
        self._check_model(meta, model, fingerprint)
        self._add_read_columns()

    def _add_read_columns(self) -> None:
        """An index written before chunks held their sentences' vectors (`sentences`) or their
        tokens' codes (`tokens`) gains the (empty) columns; `rag ingest` fills them in
        (`chunks_without_sentences`). Until every chunk has them, searches rank without
        sentences, and without late interaction for the chunks that lack codes. A read-only
        index stays as it is."""
        def missing(db) -> list[str]:
            columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
            return [c for c in READ_COLUMNS if c not in columns]

        if not missing(self.db):
            return
        try:
            with self.transaction() as db:
                for column in missing(db):
                    db.execute(f"ALTER TABLE chunks ADD COLUMN {column} BLOB")
        except sqlite3.OperationalError:
            pass  # read-only: searched without what it lacks

    def _check_format(self, meta: dict[str, str]) -> None:
        if int(meta.get("format_version", -1)) != FORMAT_VERSION:
            raise IndexMismatch(
                f"{self.dir}/ was written in index format {meta.get('format_version')}, this "
                f"rag reads format {FORMAT_VERSION}: delete the folder and re-run `rag ingest`")

    def _upgrade_full_text(self) -> None:
        """Format 2 -> 3, in one transaction: the full-text index is rebuilt with each chunk's
        neighbouring text. The vectors are untouched, so nothing is embedded again."""
        try:
            with self.transaction() as db:
                if self.meta().get("format_version") != str(UPGRADABLE_FROM):
                    return  # another process upgraded it meanwhile
                db.execute("DROP TABLE IF EXISTS chunks_fts")
                db.execute(FTS_SCHEMA)
                for source, text in db.execute("SELECT source, text FROM documents").fetchall():
                    rows = db.execute("SELECT id, start, end, text FROM chunks WHERE source = ? "
                                      "ORDER BY id", (source,)).fetchall()
                    contexts = neighbour_contexts(text, [(a, b) for _, a, b, _ in rows])
                    db.executemany("INSERT INTO chunks_fts (rowid, text, context) "
                                   "VALUES (?, ?, ?)",
                                   [(r[0], r[3], c) for r, c in zip(rows, contexts)])
                db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                           (str(FORMAT_VERSION),))
        except sqlite3.OperationalError as e:
            raise IndexMismatch(
                f"{self.dir}/ was written in index format {UPGRADABLE_FROM} and could not be "
                f"upgraded to format {FORMAT_VERSION} here ({e}): open it once where it can be "
                "written, or delete the folder and re-run `rag ingest`") from e
        try:
            self._write_manifest_file()
        except OSError:
            pass  # the copy for people; the database holds the truth

    def _check_model(self, meta: dict[str, str], model: str, fingerprint: str) -> None:
        if meta["embedding_model"] != model or meta["embedding_fingerprint"] != fingerprint:
            raise IndexMismatch(
                f"{self.dir}/ was built with embedding model {meta['embedding_model']!r} "
                f"({meta['embedding_fingerprint']}), not {model!r} ({fingerprint}): use that "
                "model, or ingest into a new --index folder")

    def close(self) -> None:
        self._end_read()
        self.db.close()

    def meta(self) -> dict[str, str]:
        try:
            return dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.OperationalError:
            return {}

    def manifest(self) -> Manifest:
        m = self.meta()
        n_docs, = self.db.execute("SELECT count(*) FROM documents").fetchone()
        n_chunks, = self.db.execute("SELECT count(*) FROM chunks").fetchone()
        return Manifest(int(m["format_version"]), m["embedding_model"],
                        m["embedding_fingerprint"], int(m["dimension"]),
                        int(m["generation"]), n_docs, n_chunks)

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
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    @contextmanager
    def writer(self, wait_s: float = 60.0,
               notify: Callable[[str], None] | None = None) -> Iterator[Store]:
        """Hold the index's write lock: one writer at a time; readers are never blocked.
        `notify` is told once when the lock is held by another process and this one waits."""
        lock_path = self.dir / "write.lock"
        try:
            fh = open(lock_path, "a+")
        except OSError as e:
            raise StoreError(f"{self.dir}/ cannot be written here ({(e.strerror or str(e))}"
                             "): ingest as a user who may write it, or into another --index "
                             "folder; the index is unchanged") from None
        with fh:
            deadline = time.monotonic() + wait_s
            told = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if notify is not None and not told:
                        notify(f"{self.dir}/ is being written by another rag process; waiting "
                               f"up to {wait_s:g} s for it to finish")
                        told = True
                    if time.monotonic() >= deadline:
                        raise IndexLocked(
                            f"{self.dir}/ is being written by another rag process; wait for it "
                            "to finish and try again") from None
                    time.sleep(0.2)
            try:
                self._remove_stale_temporaries()
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _remove_stale_temporaries(self) -> None:
        """Temporary files left by a process killed mid-write (name.tmp<pid>, pid gone)."""
        for tmp in self.dir.glob("*.tmp*"):
            pid = tmp.name.rsplit(".tmp", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:  # alive, someone else's
                pass

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
                         chunk.n_tokens, np.asarray(vec, dtype=np.float32).tobytes(),
                         chunk.page, sents, tokens))
                    db.execute("INSERT INTO chunks_fts (rowid, text, context) VALUES (?, ?, ?)",
                               (cur.lastrowid, chunk.text, context))
            _next_generation(db)
        self._write_manifest_file()

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
            _next_generation(db)

    def _write_manifest_file(self) -> None:
        try:
            _atomic_write(self.dir / "manifest.json",
                          json.dumps(self.manifest().as_json(), indent=2).encode())
        except OSError:
            pass  # the copy for people (a full disk, a read-only folder); SQLite holds the truth

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
        return {r[0]: (Chunk(*r[1:-1]), np.frombuffer(r[-1], dtype=np.float32)) for r in rows}

    def vectors(self, rowids: list[int]) -> np.ndarray:
        dim = int(self.meta()["dimension"])
        out = np.zeros((len(rowids), dim), dtype=np.float32)
        if not rowids:
            return out
        marks = ",".join("?" * len(rowids))
        found = {i: v for i, v in self.db.execute(
            f"SELECT id, vector FROM chunks WHERE id IN ({marks})", rowids)}
        for j, i in enumerate(rowids):
            out[j] = np.frombuffer(found[i], dtype=np.float32)
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

    def mentions(self, word: str) -> bool:
        """Whether any indexed passage holds `word` (as FTS5 reads it: case folded, stemmed)."""
        word = word.replace('"', "")
        if not word.strip():
            return False
        row = self.db.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1",
                              (f'"{word}"',)).fetchone()
        return row is not None

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
                    _atomic_write(path, postings.to_bytes())
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
        faiss = _faiss()

        self._begin_read()
        gen = self.generation()
        if self._faiss is not None and self._faiss_generation == gen:
            return self._faiss
        path = self.dir / FAISS_NAME
        tag = self.dir / (FAISS_NAME + ".generation")
        index = None
        try:
            if path.exists() and tag.exists() and tag.read_text().strip() == str(gen):
                index = faiss.read_index(str(path))
        except (RuntimeError, OSError):
            index = None
        if index is None or not self._same_ids(index):
            index = self._build_faiss()
            self._save_faiss(index, gen)
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

    def _same_ids(self, index) -> bool:
        """The file holds exactly the chunks this state holds. Ids are never reused, so this
        also catches a file written for another generation by a racing process."""
        import faiss

        ids = self._chunk_ids()
        if index.ntotal != len(ids):
            return False
        try:
            held = faiss.vector_to_array(faiss.downcast_index(index).id_map)
        except (AttributeError, RuntimeError):
            return False
        return bool(np.array_equal(np.sort(held), ids))

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
                   np.vstack([np.frombuffer(b, dtype=np.float32) for _, b in rows]))

    def _save_faiss(self, index, generation: int) -> None:
        import faiss

        path = self.dir / FAISS_NAME
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            faiss.write_index(index, str(tmp))
            os.replace(tmp, path)
            _atomic_write(self.dir / (FAISS_NAME + ".generation"), str(generation).encode())
        except (OSError, RuntimeError):  # faiss says RuntimeError for a full disk
            try:
                tmp.unlink(missing_ok=True)  # a read-only index still answers from memory
            except OSError:
                pass

    def refresh(self) -> None:
        """Bring the FAISS file and the postings up to the committed state (after a write, so
        that the next search starts from files)."""
        self.faiss_index()
        self.lexical_postings()


def _next_generation(db: sqlite3.Connection) -> None:
    """Within a write transaction: the index's state moves on, and every cache of it (the
    FAISS file, the postings, the sentence vectors in memory) reads it anew."""
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def pack_sentences(spans: Iterable[tuple[int, int]], vectors: np.ndarray) -> bytes:
    """A chunk's sentences as stored: their count, their (start, end) within the chunk's text
    (int32) and their unit vectors in bfloat16 (half float32's bytes; cosines move by ~1e-3;
    bfloat16 rather than float16: it widens to float32 by a shift, 4x faster in numpy).
    Rounded to nearest, ties to even."""
    spans = np.asarray(list(spans), dtype=np.int32).reshape(-1, 2)
    bits = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.int32(len(spans)).tobytes() + spans.tobytes() + bf16.tobytes()


def pack_tokens(codes: np.ndarray | None) -> bytes:
    """A chunk's token codes as stored (rag.minilm.token_codes, row after row); empty where
    the embedding model gives none. (NULL, not empty, is a chunk ingested while late
    interaction was off: the first ingest with it on fills it in.)"""
    return b"" if codes is None else np.ascontiguousarray(codes, dtype=np.uint8).tobytes()


def unpack_sentences(blob: bytes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(spans (n, 2), vectors (n, dim) as stored, bfloat16 bits in uint16) of a blob
    `pack_sentences` wrote; `widen` turns the vectors into float32."""
    n = int(np.frombuffer(blob, dtype=np.int32, count=1)[0])
    spans = np.frombuffer(blob, dtype=np.int32, count=2 * n, offset=4).reshape(n, 2)
    vectors = np.frombuffer(blob, dtype=np.uint16, count=n * dim, offset=4 + 8 * n)
    return spans, vectors.reshape(n, dim)


def stack_sentences(blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(each blob's sentence count, all their vectors one after another as stored) of blobs
    `pack_sentences` wrote: the vectors joined as bytes and read once (SQuAD's 3,711 chunks in
    ~20 ms; blob by blob through `unpack_sentences`, ~40 ms)."""
    counts = np.array([int.from_bytes(b[:4], "little", signed=True) for b in blobs],
                      dtype=np.int64)
    joined = b"".join(b[4 + 8 * int(n):] for b, n in zip(blobs, counts))
    return counts, np.frombuffer(joined, dtype=np.uint16).reshape(-1, dim)


def widen(bf16: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32."""
    return (bf16.astype(np.uint32) << 16).view(np.float32)


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
        # the cores the next question's embedding needs (see Store.nearest)
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

    faiss = _faiss()
    faiss.omp_set_num_threads(auto_threads())
    try:
        return _build_index(faiss, dim, n_vectors, batches, kind)
    finally:
        faiss.omp_set_num_threads(1)


def _faiss():
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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        except OSError:
            pass
        raise
