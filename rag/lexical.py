"""BM25 over the full-text index, in memory: the scores SQLite's FTS5 bm25() gives, without
SQLite's per-row work.

FTS5 spends ~0.8 ms a SQuAD question (3,711 chunks, ~740 matching rows) reading each matching
row's positions and its size from disk pages; the same sums over postings held in numpy arrays
take ~0.1 ms. The postings are read from FTS5 itself (its fts5vocab view of every token it
stored), and a question's words are turned into terms by FTS5's own tokenizer on a private
in-memory table, so both sides see exactly what FTS5 sees: the same case folding, diacritics
and Porter stems. The arithmetic is FTS5's (ext/fts5/fts5_aux.c), operation for operation, in
double precision, so the scores are FTS5's to the last bit (tests/test_lexical.py; for a
context weight that is a binary fraction, as rag's 0.5: FTS5 adds it once per token).

Used up to LEXICAL_MEMORY_MAX chunks (the postings take ~3 bytes a token); above it, and for
words FTS5 reads as more than one token, the search goes to FTS5. After an ingest that adds few
rows, only those are read out of FTS5 and merged with the postings before (`updated`: 0.8 s
against 5.3 s for the whole at 52,000 chunks, the same postings)."""

from __future__ import annotations

import io
import sqlite3
import threading
import zipfile
from collections.abc import Sequence

import numpy as np

TOKENIZE = "porter unicode61"
K1, B = 1.2, 0.75  # FTS5's own
LEXICAL_MEMORY_MAX = 50_000
FORMAT = 1
MEMO_WORDS = 100_000


class Postings:
    """Every term's postings (the rows holding it, and how often in each column) for one
    generation of an index, and each row's size in tokens."""

    def __init__(self, generation: int, terms: Sequence[str], starts: np.ndarray,
                 rows: np.ndarray, own: np.ndarray, context: np.ndarray, rowids: np.ndarray,
                 sizes: np.ndarray):
        self.generation = generation
        self.terms = list(terms)
        self.starts, self.rows, self.own, self.context = starts, rows, own, context
        self.rowids, self.sizes = rowids, sizes
        self._at = {t: i for i, t in enumerate(self.terms)}
        n = len(rowids)
        # FTS5: avgdl = tokens in all columns of all rows / rows; a row's length normaliser
        # k1 * (1 - b + b * D / avgdl), computed in its order of operations
        self.avgdl = float(sizes.sum()) / n if n else 1.0
        self._norm = K1 * (1 - B + B * sizes.astype(np.float64) / self.avgdl)

    @classmethod
    def build(cls, db: sqlite3.Connection, table: str, generation: int,
              schema: str = "main") -> Postings:
        """From FTS5's record of every token it holds, in the state `db` reads. Column 0 is a
        chunk's own text, any other its neighbours' (3,711 SQuAD chunks: 0.4 s; 52,000: 5.4 s,
        hence `updated` after a small ingest)."""
        vocab = f"temp.{schema}_{table}"
        for kind in ("row", "instance"):
            db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {vocab}_{kind} "
                       f"USING fts5vocab({schema}, '{table}', '{kind}')")
        rowids = np.fromiter((r for (r,) in db.execute(
            f"SELECT rowid FROM {schema}.{table} ORDER BY rowid")), dtype=np.int64)
        # both views go term by term in the same order: each term's tokens, then the next's
        listed = db.execute(f"SELECT term, cnt FROM {vocab}_row").fetchall()
        terms = [t for t, _ in listed]
        tokens = np.array([c for _, c in listed], dtype=np.int64)
        column = {name: i for i, (_, name, *_) in enumerate(
            db.execute(f"PRAGMA {schema}.table_info({table})"))}
        where = np.fromiter((d * 2 + (column[c] > 0) for d, c in db.execute(
            f"SELECT doc, col FROM {vocab}_instance")), dtype=np.int64,
            count=int(tokens.sum()))
        term_of = np.repeat(np.arange(len(terms), dtype=np.int64), tokens)
        row_of = np.searchsorted(rowids, where >> 1)
        key = term_of * len(rowids) + row_of  # one entry a (term, row), in that order
        entries, entry_of = np.unique(key, return_inverse=True)
        own = np.bincount(entry_of, weights=(where & 1) == 0, minlength=len(entries))
        context = np.bincount(entry_of, weights=(where & 1) == 1, minlength=len(entries))
        entry_term = entries // max(len(rowids), 1)
        starts = np.searchsorted(entry_term, np.arange(len(terms) + 1))
        sizes = np.bincount(row_of, minlength=len(rowids))
        return cls(generation, terms, starts, (entries % max(len(rowids), 1)).astype(np.int32),
                   own.astype(np.float32), context.astype(np.float32), rowids, sizes)

    def updated(self, db: sqlite3.Connection, table: str, generation: int,
                rowids: np.ndarray) -> Postings:
        """These postings brought to `rowids`, every row `table` holds now: rows gone are
        dropped, new ones read out of FTS5 alone. Exact, as a row never changes (row ids are
        never reused): the same postings `build` reads, in a fraction of its time when few
        rows are new."""
        added = np.setdiff1d(rowids, self.rowids)
        db.execute("DROP TABLE IF EXISTS temp.added")
        db.execute("DROP TABLE IF EXISTS temp.added_ids")
        columns = [name for _, name, *_ in db.execute(f"PRAGMA main.table_info({table})")]
        db.execute(f"CREATE VIRTUAL TABLE temp.added USING fts5({', '.join(columns)}, "
                   f"tokenize='{TOKENIZE}')")
        db.execute("CREATE TABLE temp.added_ids (id INTEGER PRIMARY KEY)")
        db.executemany("INSERT INTO temp.added_ids VALUES (?)", ((int(r),) for r in added))
        db.execute(f"INSERT INTO temp.added (rowid, {', '.join(columns)}) SELECT rowid, "
                   f"{', '.join(columns)} FROM main.{table} WHERE rowid IN "
                   "(SELECT id FROM temp.added_ids)")
        new = Postings.build(db, "added", generation, schema="temp")
        for name in ("added", "added_ids"):
            db.execute(f"DROP TABLE temp.{name}")
        kept = np.isin(self.rows, np.flatnonzero(np.isin(self.rowids, rowids)))
        at = dict(self._at)  # the new rows' terms after these
        for t in new.terms:
            at.setdefault(t, len(at))
        term = np.concatenate([self._entry_terms()[kept],
                               np.array([at[t] for t in new.terms],
                                        dtype=np.int64)[new._entry_terms()]])
        row = np.searchsorted(rowids, np.concatenate([self.rowids[self.rows[kept]],
                                                      new.rowids[new.rows]]))
        own = np.concatenate([self.own[kept], new.own])
        context = np.concatenate([self.context[kept], new.context])
        order = np.lexsort((row, term))
        used, term = np.unique(term[order], return_inverse=True)  # terms no row holds go
        terms = list(at)
        return Postings(generation, [terms[i] for i in used],
                        np.searchsorted(term, np.arange(len(used) + 1)),
                        row[order].astype(np.int32), own[order], context[order], rowids,
                        np.bincount(row, weights=own + context,
                                    minlength=len(rowids)).astype(np.int64))

    def _entry_terms(self) -> np.ndarray:
        """The term (its index in `terms`) of each entry of `rows`, `own` and `context`."""
        return np.repeat(np.arange(len(self.terms), dtype=np.int64), np.diff(self.starts))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, format=np.int64(FORMAT), generation=np.int64(self.generation),
                 terms=np.array(self.terms, dtype=object).astype(str), starts=self.starts,
                 rows=self.rows, own=self.own, context=self.context, rowids=self.rowids,
                 sizes=self.sizes)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path) -> Postings | None:
        """The postings saved at `path`, or None if it is missing, unreadable, cut short or of
        another format."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != FORMAT:
                    return None
                return cls(int(z["generation"]), z["terms"].tolist(), z["starts"], z["rows"],
                           z["own"], z["context"], z["rowids"], z["sizes"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def _posting(self, term: str, context_weight: float
                 ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(the rows holding `term`, its weighted count in each, its idf) as FTS5's bm25()
        reads them, or None for a term no row holds."""
        at = self._at.get(term)
        if at is None:
            return None
        a, b = self.starts[at], self.starts[at + 1]
        freq = self.own[a:b].astype(np.float64) + \
            context_weight * self.context[a:b].astype(np.float64)
        n = len(self.rowids)
        idf = float(np.log((n - (b - a) + 0.5) / ((b - a) + 0.5)))
        return self.rows[a:b], freq, (idf if idf > 0.0 else 1e-6)

    def search(self, terms: Sequence[str], limit: int, context_weight: float
               ) -> list[tuple[int, float]]:
        """(rowid, bm25) best first, ties by rowid: FTS5's bm25(table, 1.0, context_weight)
        for the query "t1" OR "t2" ..., one phrase per term, negated (higher is better)."""
        n = len(self.rowids)
        score = np.zeros(n)
        matched = np.zeros(n, dtype=bool)
        for term in terms:
            posting = self._posting(term, context_weight)
            if posting is None:
                continue
            rows, freq, idf = posting
            score[rows] += idf * ((freq * (K1 + 1.0)) / (freq + self._norm[rows]))
            matched[rows] = True
        found = np.flatnonzero(matched)
        if not len(found):
            return []
        if len(found) > limit:
            cut = -np.partition(-score[found], limit - 1)[limit - 1]
            found = found[score[found] >= cut]  # all tied at the cut, then ordered below
        order = found[np.lexsort((self.rowids[found], -score[found]))][:limit]
        return list(zip(self.rowids[order].tolist(), score[order].tolist()))

    def pool_scores(self, terms: Sequence[str], rowids: Sequence[int], context_weight: float,
                    pool_weight: float) -> list[tuple[int, float]]:
        """(rowid, score) of those of `rowids` holding any of `terms`, best first (ties by
        rowid): bm25 as `search` computes it, with each term's idf scaled by
        (1 - the share of `rowids` holding it) ** pool_weight. Among candidates that are all
        about one thing (54 SQuAD paragraphs on one football game), the words they all share
        ("Super Bowl", "Broncos") tell none of them apart; the words few of them hold do."""
        n = len(self.rowids)
        ids = np.fromiter(rowids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.rowids, ids), max(n - 1, 0))
        keep = self.rowids[at] == ids if n else np.zeros(len(ids), dtype=bool)
        ids, at = ids[keep], at[keep]
        if not len(ids):
            return []
        where = np.full(n, -1, dtype=np.int64)
        where[at] = np.arange(len(at))
        score = np.zeros(len(at))
        norm = self._norm[at]
        for term in dict.fromkeys(terms):
            posting = self._posting(term, context_weight)
            if posting is None:
                continue
            rows, freq, idf = posting
            mine = where[rows]
            inside = mine >= 0
            if not inside.any():
                continue
            mine, freq = mine[inside], freq[inside]
            idf *= (1.0 - len(mine) / len(at)) ** pool_weight
            score[mine] += idf * ((freq * (K1 + 1.0)) / (freq + norm[mine]))
        found = np.flatnonzero(score > 0)
        order = found[np.lexsort((ids[found], -score[found]))]
        return list(zip(ids[order].tolist(), score[order].tolist()))


class Tokenizer:
    """Words -> the terms FTS5 indexes them as, by FTS5 itself (a private in-memory table with
    the index's tokenizer), remembered per process."""

    def __init__(self):
        self._db: sqlite3.Connection | None = None
        self._memo: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def terms(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        known = {w: self._memo.get(w) for w in words}
        missing = [w for w, t in known.items() if t is None]
        if missing:
            with self._lock:
                known.update(self._tokenize(missing))
                if len(self._memo) + len(missing) > MEMO_WORDS:
                    self._memo.clear()
                self._memo.update((w, known[w]) for w in missing)
        return [known[w] for w in words]

    def _tokenize(self, words: list[str]) -> dict[str, tuple[str, ...]]:
        db = self._db
        if db is None:
            db = self._db = sqlite3.connect(":memory:", isolation_level=None,
                                            check_same_thread=False)
            db.execute(f"CREATE VIRTUAL TABLE words USING fts5(w, tokenize='{TOKENIZE}')")
            db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(words, 'instance')")
        db.executemany("INSERT INTO words (rowid, w) VALUES (?, ?)", enumerate(words))
        found: dict[int, list[tuple[int, str]]] = {}
        for doc, offset, term in db.execute("SELECT doc, offset, term FROM tokens"):
            found.setdefault(doc, []).append((offset, term))
        db.execute("DELETE FROM words")
        return {w: tuple(t for _, t in sorted(found.get(i, []))) for i, w in enumerate(words)}
