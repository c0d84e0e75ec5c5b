"""The index folder on disk: its files, its format, the SQLite schema and connection, and the
codecs of what a chunk's row stores. `rag.store.Store` reads and writes an index through these.

Layout of an index folder:
    rag.sqlite      documents, chunks (with their vectors), a full-text index, the manifest
    vectors.faiss   FAISS index over the chunk vectors, tagged with the generation it holds
                    (vectors.faiss.generation; rag.vector_index)
    lexical.npz     the full-text index's postings for BM25 in memory (rag.lexical), a cache
                    tagged with its generation, as vectors.faiss
    manifest.json   a human-readable copy of the manifest
    write.lock      held by the one process that writes

Every write is one SQLite transaction, so a kill at any moment leaves the last committed state.
The files beside the database are caches of it, rewritten atomically (temporary file + rename,
`atomic_write`) and rebuilt whenever their generation or their set of ids does not match.
Chunk ids are never reused (AUTOINCREMENT), so the same ids mean the same vectors.
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
from rag.lexical import TOKENIZE

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
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "write.lock"

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
# What a search reads beside a chunk's text and vector, added to older indexes when opened:
# its sentences (`pack_sentences`) and its tokens' codes for late interaction
# (rag.minilm.token_codes: 48 bytes a token, ~2.6 KiB a SQuAD chunk; empty where the
# embedding model is not one rag runs itself)
READ_COLUMNS = ("sentences", "tokens")
LOCK_WAIT_S = 30  # how long an opening or a write waits for another process's lock

# -- the connection ----------------------------------------------------------------------------


def journal_to_wal(db: sqlite3.Connection, deadline: float) -> None:
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


def connect(db_path: Path, read_only: bool = False) -> sqlite3.Connection:
    """The index's database in write-ahead logging; `read_only`: as it stands on disk, for a
    process that may not write the folder (WAL's shared-memory file cannot be made there).
    Then nothing may write it meanwhile: such a folder is read by those who cannot write it."""
    if read_only:
        from urllib.parse import quote

        return sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?immutable=1", uri=True,
                               isolation_level=None, check_same_thread=False)
    db = sqlite3.connect(db_path, timeout=LOCK_WAIT_S, isolation_level=None,
                         check_same_thread=False)
    journal_to_wal(db, deadline=time.monotonic() + LOCK_WAIT_S)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def cannot_write(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def reason(index_dir: Path, e: sqlite3.Error) -> str:
    """One line on what is wrong with an index, advising to rebuild only a damaged one."""
    text = str(e)
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (f"{index_dir}/{DB_NAME} is damaged ({text}): ingest the documents again into "
                "a new --index folder (keep the damaged one to inspect it)")
    if cannot_write(e):
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
            return reason(index_dir, sqlite3.OperationalError("database or disk is full"))
        return f"{index_dir}/ could not be read or written ({text})"
    return reason(index_dir, e)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed whole, or rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")


def next_generation(db: sqlite3.Connection) -> None:
    """Within a write transaction: the index's state moves on, and every cache of it (the
    FAISS file, the postings, the sentence vectors in memory) reads it anew."""
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


# -- the manifest ------------------------------------------------------------------------------


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


def read_meta(db: sqlite3.Connection) -> dict[str, str]:
    """The meta table (format, model, dimension, generation); empty before it exists."""
    try:
        return dict(db.execute("SELECT key, value FROM meta"))
    except sqlite3.OperationalError:
        return {}


def read_manifest(db: sqlite3.Connection) -> Manifest:
    m = read_meta(db)
    n_docs, = db.execute("SELECT count(*) FROM documents").fetchone()
    n_chunks, = db.execute("SELECT count(*) FROM chunks").fetchone()
    return Manifest(int(m["format_version"]), m["embedding_model"],
                    m["embedding_fingerprint"], int(m["dimension"]),
                    int(m["generation"]), n_docs, n_chunks)


def write_manifest(index_dir: Path, db: sqlite3.Connection) -> None:
    """manifest.json, the copy for people of what the database says."""
    try:
        atomic_write(index_dir / MANIFEST_NAME,
                     json.dumps(read_manifest(db).as_json(), indent=2).encode())
    except OSError:
        pass  # the copy for people (a full disk, a read-only folder); SQLite holds the truth


# -- opening: the format and the model ---------------------------------------------------------


def prepare(index_dir: Path, db: sqlite3.Connection, model: str, fingerprint: str,
            dimension: int, create: bool) -> None:
    """Check that the index at `db` is one this rag reads, built with `model`; with `create`,
    make the schema and the meta of a new index. An older index is brought up to date here
    (`upgrade_full_text`, `add_read_columns`)."""
    meta = read_meta(db)
    if meta:
        if meta.get("format_version") == str(UPGRADABLE_FROM):
            upgrade_full_text(index_dir, db)
            meta = read_meta(db)
        check_format(index_dir, meta)  # before the schema: an old index may lack its columns
    if create:
        db.executescript(SCHEMA)
    if not meta:
        if not create:
            raise IndexMissing(f"{index_dir}/ holds no index yet: run `rag ingest PATH`")
        with transaction(db):  # OR IGNORE: another process may be creating it too
            for k, v in {"format_version": FORMAT_VERSION, "embedding_model": model,
                         "embedding_fingerprint": fingerprint, "dimension": dimension,
                         "generation": 0}.items():
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (k, str(v)))
        meta = read_meta(db)
    check_format(index_dir, meta)
    check_model(index_dir, meta, model, fingerprint)
    add_read_columns(db)


def add_read_columns(db: sqlite3.Connection) -> None:
    """An index written before chunks held their sentences' vectors (`sentences`) or their
    tokens' codes (`tokens`) gains the (empty) columns; `rag ingest` fills them in
    (`Store.chunks_without_sentences`). Until every chunk has them, searches rank without
    sentences, and without late interaction for the chunks that lack codes. A read-only
    index stays as it is."""
    def missing(db) -> list[str]:
        columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
        return [c for c in READ_COLUMNS if c not in columns]

    if not missing(db):
        return
    try:
        with transaction(db):
            for column in missing(db):
                db.execute(f"ALTER TABLE chunks ADD COLUMN {column} BLOB")
    except sqlite3.OperationalError:
        pass  # read-only: searched without what it lacks


def check_format(index_dir: Path, meta: dict[str, str]) -> None:
    if int(meta.get("format_version", -1)) != FORMAT_VERSION:
        raise IndexMismatch(
            f"{index_dir}/ was written in index format {meta.get('format_version')}, this "
            f"rag reads format {FORMAT_VERSION}: delete the folder and re-run `rag ingest`")


def upgrade_full_text(index_dir: Path, db: sqlite3.Connection) -> None:
    """Format 2 -> 3, in one transaction: the full-text index is rebuilt with each chunk's
    neighbouring text. The vectors are untouched, so nothing is embedded again."""
    try:
        with transaction(db):
            if read_meta(db).get("format_version") != str(UPGRADABLE_FROM):
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
            f"{index_dir}/ was written in index format {UPGRADABLE_FROM} and could not be "
            f"upgraded to format {FORMAT_VERSION} here ({e}): open it once where it can be "
            "written, or delete the folder and re-run `rag ingest`") from e
    write_manifest(index_dir, db)


def check_model(index_dir: Path, meta: dict[str, str], model: str, fingerprint: str) -> None:
    if meta["embedding_model"] != model or meta["embedding_fingerprint"] != fingerprint:
        raise IndexMismatch(
            f"{index_dir}/ was built with embedding model {meta['embedding_model']!r} "
            f"({meta['embedding_fingerprint']}), not {model!r} ({fingerprint}): use that "
            "model, or ingest into a new --index folder")


# -- the write lock ----------------------------------------------------------------------------


@contextmanager
def write_lock(index_dir: Path, wait_s: float,
               notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the index's write lock (write.lock): one writer at a time. `notify` is told once
    when the lock is held by another process and this one waits. Temporary files a killed
    writer left behind are removed once the lock is held."""
    lock_path = index_dir / LOCK_NAME
    try:
        fh = open(lock_path, "a+")
    except OSError as e:
        raise StoreError(f"{index_dir}/ cannot be written here ({(e.strerror or str(e))}"
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
                    notify(f"{index_dir}/ is being written by another rag process; waiting "
                           f"up to {wait_s:g} s for it to finish")
                    told = True
                if time.monotonic() >= deadline:
                    raise IndexLocked(
                        f"{index_dir}/ is being written by another rag process; wait for it "
                        "to finish and try again") from None
                time.sleep(0.2)
        try:
            remove_stale_temporaries(index_dir)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_temporaries(index_dir: Path) -> None:
    """Temporary files left by a process killed mid-write (name.tmp<pid>, pid gone)."""
    for tmp in index_dir.glob("*.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def temporary(path: Path) -> Path:
    """Where a file is written before it is renamed to `path` (removed if its writer dies:
    `remove_stale_temporaries`)."""
    return path.with_name(path.name + f".tmp{os.getpid()}")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = temporary(path)
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


# -- what a chunk's row stores -----------------------------------------------------------------


def pack_vector(vector: np.ndarray) -> bytes:
    """A chunk's vector as stored: float32."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def unpack_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


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


