"""BM25 in memory (rag.lexical) against FTS5's own bm25(), on real indexes."""

import pytest

from rag import lexical
from rag.ingest import ingest
from rag.retrieve import Retriever
from rag.store import LEXICAL_NAME, open_store
from rag.text import search_words

QUESTIONS = [
    "How many North Korean personnel were killed?",
    "What did the missiles launched from the coast do?",  # "missiles": stemmed
    "missile missiles launch launched launching",  # several words, one term: counted each time
    "Who said the talks in Pyongyang would resume?",
    "naïve café résumé",  # diacritics folded by unicode61
    "Kim Jong Un Moscow Russia Ukraine troops",
    "zyzzyva quux",  # in no passage
]


def fts5(store, words, limit, weight):
    expr = " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
    return [(r, -s) for r, s in store.db.execute(
        "SELECT rowid, bm25(chunks_fts, 1.0, ?) AS s FROM chunks_fts WHERE chunks_fts MATCH ? "
        "ORDER BY s LIMIT ?", (weight, expr, limit))]


def same_as_fts5(store, words, limit, weight):
    mine, theirs = store.lexical_search(words, limit, weight), fts5(store, words, limit, weight)
    # the same scores to the last bit, in the same order; rows tied on a score in any order
    assert [s for _, s in mine] == [s for _, s in theirs]
    assert sorted(mine) == sorted(theirs) or len(theirs) == limit


def test_scores_are_fts5s_to_the_bit(seed_settings):
    store, _ = open_store(seed_settings)
    assert store.lexical_postings() is not None  # the in-memory path is the one tested
    texts = [c.text for _, c in store.all_chunks()]
    questions = QUESTIONS + [" ".join(t.split()[:12]) for t in texts[::3]]
    for q in questions:
        for weight in (0.0, 0.5, 1.0):
            for limit in (3, 50):
                same_as_fts5(store, search_words(q), limit, weight)
    store.close()


def test_postings_follow_the_index_through_replacements(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    files = sorted(seed_copy.glob("*.txt"))
    files[0].write_text("The ferry timetable changed on Monday; missiles were not mentioned.")
    files[1].unlink()
    ingest([seed_copy], fresh_settings)
    store, _ = open_store(fresh_settings)
    postings = store.lexical_postings()
    assert postings.generation == store.generation()
    assert set(postings.rowids.tolist()) == {r for r, _ in store.all_chunks()}
    for q in QUESTIONS + ["ferry timetable Monday"]:
        same_as_fts5(store, search_words(q), 20, 0.5)
    store.close()


def test_postings_file_is_rebuilt_when_stale_or_damaged(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    path = fresh_settings.index_dir / LEXICAL_NAME
    assert path.exists()  # written by the ingest, for the next process
    store, _ = open_store(fresh_settings)
    expected = store.lexical_search(["missile", "launch"], 10, 0.5)
    store.close()

    whole = path.read_bytes()
    for damaged in (b"not a postings file", whole[:len(whole) // 2], whole[:10]):
        path.write_bytes(damaged)  # another file, or one cut short (a full disk, a copy)
        store, _ = open_store(fresh_settings)
        assert store.lexical_search(["missile", "launch"], 10, 0.5) == expected
        store.close()
        assert lexical.Postings.from_file(path) is not None  # saved again

    files = sorted(seed_copy.glob("*.txt"))
    files[0].write_text("Missiles were launched from a ship on Tuesday.")
    old = path.read_bytes()
    ingest([seed_copy], fresh_settings)
    path.write_bytes(old)  # a file from the generation before
    store, _ = open_store(fresh_settings)
    assert store.lexical_postings().generation == store.generation()
    same_as_fts5(store, ["missile", "launch", "ship"], 10, 0.5)
    store.close()


def test_an_unwritable_index_answers_from_memory(fresh_settings, seed_copy, monkeypatch):
    ingest([seed_copy], fresh_settings)
    (fresh_settings.index_dir / LEXICAL_NAME).unlink()

    def refused(path, data):  # as on a read-only folder (the tests may run as root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("rag.store.atomic_write", refused)
    store, _ = open_store(fresh_settings)
    assert store.lexical_postings() is not None
    same_as_fts5(store, ["missile", "launch"], 10, 0.5)
    assert not (fresh_settings.index_dir / LEXICAL_NAME).exists()
    store.close()


def test_large_indexes_and_multi_token_words_go_to_fts5(seed_settings, monkeypatch):
    store, _ = open_store(seed_settings)
    # "north_korea" is two tokens to FTS5 (a phrase), which postings of terms cannot answer
    assert store._tokenizer.terms(["north_korea", "missiles"]) == [("north", "korea"),
                                                                  ("missil",)]
    same_as_fts5(store, ["north_korea", "missiles"], 10, 0.5)
    store.close()

    monkeypatch.setattr("rag.store.LEXICAL_MEMORY_MAX", 3)
    store, _ = open_store(seed_settings)
    assert store.lexical_postings() is None
    same_as_fts5(store, ["missile", "launch"], 10, 0.5)
    store.close()


def test_nearest_is_faiss_order_without_padding(seed_settings):
    store, emb = open_store(seed_settings)
    index = store.faiss_index()
    v = emb.embed(["missile"])[0]
    scores, ids = index.search(v[None, :], 5)
    assert store.nearest(v, 5) == list(zip(ids[0].tolist(), scores[0].tolist()))
    assert len(store.nearest(v, index.ntotal + 5)) == index.ntotal  # no -1 rows
    store.close()


def test_search_is_the_same_through_either_bm25(seed_settings, monkeypatch):
    """Through FTS5 (an index past LEXICAL_MEMORY_MAX) the candidates keep BM25's own order:
    re-weighing them by the words few of them share needs the postings in memory."""
    store, emb = open_store(seed_settings)
    memory = [[(h.chunk.source, h.chunk.chunk_id) for h in
               Retriever(store, emb, pool_idf=False).search(q, k=5)] for q in QUESTIONS]
    store.close()
    monkeypatch.setattr("rag.store.LEXICAL_MEMORY_MAX", 0)
    store, emb = open_store(seed_settings)
    fts = [[(h.chunk.source, h.chunk.chunk_id) for h in
            Retriever(store, emb).search(q, k=5)] for q in QUESTIONS]
    store.close()
    assert memory == fts


@pytest.mark.parametrize("words", [[], [""], ['"'], ["  "]])
def test_no_words_no_hits(seed_settings, words):
    store, _ = open_store(seed_settings)
    assert store.lexical_search(words, 5) == []
    store.close()


def test_tokenizer_from_many_threads_with_its_memo_overflowing(monkeypatch):
    import threading

    monkeypatch.setattr(lexical, "MEMO_WORDS", 5)
    tok = lexical.Tokenizer()
    words = ["missiles", "launched", "running", "café", "north_korea", "Troops", "x"]
    expected = tok.terms(words)
    assert expected == [("missil",), ("launch",), ("run",), ("cafe",), ("north", "korea"),
                        ("troop",), ("x",)]
    failures = []

    def work(i):
        for r in range(200):
            ws = words[(i + r) % len(words):] + [f"w{i}x{r}"]
            got = tok.terms(ws)
            if got[:-1] != expected[(i + r) % len(words):] or got[-1] != (f"w{i}x{r}",):
                failures.append((i, r, got))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(tok._memo) <= 5 + len(words) + 1


def _by_term(p):
    return {t: sorted(zip(p.rowids[p.rows[p.starts[i]:p.starts[i + 1]]].tolist(),
                          p.own[p.starts[i]:p.starts[i + 1]].tolist(),
                          p.context[p.starts[i]:p.starts[i + 1]].tolist()))
            for i, t in enumerate(p.terms) if p.starts[i + 1] > p.starts[i]}


def test_postings_updated_after_a_small_ingest_are_the_ones_built_whole(
        fresh_settings, seed_copy, monkeypatch):
    (seed_copy / "extra.txt").write_text("A brewery in Varnholt raised its prices. " * 3)
    for i in range(6):
        (seed_copy / f"other{i}.txt").write_text(f"The council reviewed item {i} on Monday.")
    ingest([seed_copy], fresh_settings)
    calls = []
    updated = lexical.Postings.updated
    monkeypatch.setattr(lexical.Postings, "updated",
                        lambda self, *a: calls.append(a) or updated(self, *a))
    (seed_copy / "extra.txt").write_text("The ferry timetable naïvely changed on Monday.")
    (seed_copy / "other0.txt").unlink()
    (seed_copy / "new.txt").write_text("Missiles, missiles: launched from a café on Tuesday.")
    ingest([seed_copy], fresh_settings)
    assert len(calls) == 1  # the ingest's refresh took the few new rows alone
    store, _ = open_store(fresh_settings)
    now = store.lexical_postings()
    whole = lexical.Postings.build(store.db, "chunks_fts", store.generation())
    assert now.generation == whole.generation
    assert now.rowids.tolist() == whole.rowids.tolist()
    assert now.sizes.tolist() == whole.sizes.tolist()
    assert _by_term(now) == _by_term(whole)
    for q in QUESTIONS + ["ferry timetable Monday café", "brewery Varnholt prices"]:
        same_as_fts5(store, search_words(q), 20, 0.5)
    store.close()


def test_pool_scores_weigh_words_by_how_few_candidates_hold_them(seed_settings):
    from rag.store import open_store

    store, _ = open_store(seed_settings)
    postings = store.lexical_postings()
    words = ["missile", "launch", "korea"]
    terms = [t[0] for t in store._tokenizer.terms(words)]
    everything = postings.rowids.tolist()
    # at pool weight 0 the candidates keep the scores the whole index gives them
    whole = dict(postings.search(terms, len(everything), 0.5))
    pool = everything[::2]
    at_zero = postings.pool_scores(terms, pool, 0.5, 0.0)
    assert at_zero and all(whole[r] == s for r, s in at_zero)
    assert {r for r, _ in at_zero} == {r for r in pool if r in whole}
    # a word every candidate holds tells them apart no more: it adds nothing
    holders = [r for r, _ in postings.search(terms[:1], len(everything), 0.5)]
    assert postings.pool_scores(terms[:1], holders, 0.5, 3.0) == []
    scored = dict(postings.pool_scores(terms, holders, 0.5, 3.0))
    rest = dict(postings.pool_scores(terms[1:], holders, 0.5, 3.0))
    assert scored == pytest.approx(rest)
    # rows the postings do not hold are left out; order is best first
    assert postings.pool_scores(terms, [10 ** 9], 0.5, 3.0) == []
    values = [s for _, s in postings.pool_scores(terms, everything, 0.5, 3.0)]
    assert values == sorted(values, reverse=True)
    store.close()
