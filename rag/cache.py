"""Model responses remembered on disk, so an unchanged evaluation re-runs in seconds.

A response is stored under a hash of everything that decides it: the model file's fingerprint,
the llama.cpp build, the fully rendered prompt (chat messages or completion text), the grammar
and every sampling parameter. Change any of them and the entry is simply not found.

The cache is an optimisation, never a dependency: a cache file that cannot be opened, is
damaged, locked or on a read-only disk makes every lookup a miss and every store a no-op; the
run goes on and `error` says why. Each store is one SQLite transaction, so a kill mid-write
leaves the previous state.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

CACHE_NAME = "cache.sqlite"
# Bump when the meaning of a stored entry changes; older entries are then never found.
KEY_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL)
"""


def cache_key(**parts: object) -> str:
    """A stable hash of keyword parts (JSON-serialisable values)."""
    blob = json.dumps({"v": KEY_VERSION, **parts}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A key -> JSON-object store in one SQLite file, opened at first use."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._opened = False

    @classmethod
    def in_index(cls, index_dir: Path | str) -> ResponseCache:
        return cls(Path(index_dir) / CACHE_NAME)

    def _connect(self) -> sqlite3.Connection | None:
        if self._opened:
            return self._db
        self._opened = True
        for attempt in range(2):
            try:
                db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
                try:
                    db.execute(SCHEMA)
                    db.execute("SELECT key FROM responses LIMIT 1").fetchall()
                except sqlite3.Error:
                    db.close()
                    raise
                self._db = db
                return db
            except sqlite3.DatabaseError as e:
                # not a database, or damaged: set it aside once and start a fresh file
                if attempt == 0 and self.path.is_file() and _set_aside(self.path):
                    continue
                self._disable(f"{self.path}: {e}")
            except (sqlite3.Error, OSError) as e:
                self._disable(f"{self.path}: {e}")
            return None
        return None

    def _disable(self, why: str) -> None:
        self.error = why
        self.close()

    def get(self, key: str) -> dict | None:
        db = self._connect()
        value = None
        if db is not None:
            try:
                row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                value = json.loads(row[0]) if row else None
            except (sqlite3.Error, ValueError, TypeError) as e:
                self._disable(f"{self.path}: {e}")
                value = None
        if isinstance(value, dict):
            self.hits += 1
            return value
        self.misses += 1
        return None

    def put(self, key: str, value: dict) -> None:
        db = self._connect()
        if db is None:
            return
        try:
            with db:  # one transaction: the entry is written whole or not at all
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO responses (key, value, created_at) "
                           "VALUES (?, ?, ?)",
                           (key, json.dumps(value, ensure_ascii=False), time.time()))
        except sqlite3.Error as e:
            self._disable(f"{self.path}: {e}")

    def stats(self) -> dict:
        return {"path": str(self.path), "hits": self.hits, "misses": self.misses,
                "error": self.error}

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None


def _set_aside(path: Path) -> bool:
    try:
        path.replace(path.with_name(f"{path.name}.broken"))
        for suffix in ("-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return True
    except OSError:
        return False
