import json

import numpy as np
import pytest

from rag.errors import IndexLocked, IndexMismatch, IndexMissing
from rag.ingest import ingest
from rag.store import FAISS_NAME, FORMAT_VERSION, Store, open_store


def test_manifest_describes_the_index(fresh_settings, seed_copy):
    report = ingest([seed_copy], fresh_settings)
    assert len(report.added) == 3 and report.n_chunks > 3
    manifest = json.loads((fresh_settings.index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["embedding_model"] == "all-minilm-l6-v2"
    assert manifest["dimension"] == 384
    assert manifest["n_documents"] == 3 and manifest["n_chunks"] == report.n_chunks


def test_reingest_skips_unchanged_replaces_changed_drops_vanished(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    files = sorted(seed_copy.glob("*.txt"))
    files[0].write_text(files[0].read_text() + "\nA new closing sentence was added here.")
    files[1].unlink()
    report = ingest([seed_copy], fresh_settings)
    assert report.replaced == [str(files[0])]
    assert report.removed == [str(files[1])]
    assert report.unchanged == [str(files[2])]
    store, _ = open_store(fresh_settings)
    assert [s for s, _ in store.documents()] == [str(files[0]), str(files[2])]
    assert "A new closing sentence" in store.document_text(str(files[0]))
    assert store.faiss_index().ntotal == store.manifest().n_chunks
    store.close()


def test_query_with_no_index_names_the_fix(fresh_settings):
    with pytest.raises(IndexMissing, match="rag ingest"):
        open_store(fresh_settings)


def test_other_embedding_model_is_refused(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    with pytest.raises(IndexMismatch, match="built with embedding model"):
        Store.open(fresh_settings.index_dir, "other-model", "0" * 16, 384)


def test_faiss_file_is_rebuilt_when_lost_or_stale(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    (fresh_settings.index_dir / FAISS_NAME).unlink()
    store, _ = open_store(fresh_settings)
    assert store.faiss_index().ntotal == store.manifest().n_chunks
    assert (fresh_settings.index_dir / FAISS_NAME).exists()
    store.close()


def test_second_writer_is_refused_clearly(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    first, _ = open_store(fresh_settings)
    second, _ = open_store(fresh_settings)
    with first.writer():
        with pytest.raises(IndexLocked, match="another rag process"):
            with second.writer(wait_s=0.3):
                pass
    first.close()
    second.close()


def test_failed_write_leaves_the_last_committed_state(fresh_settings, seed_copy):
    ingest([seed_copy], fresh_settings)
    store, _ = open_store(fresh_settings)
    before = store.manifest()
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("DELETE FROM chunks")
            raise RuntimeError("killed mid-write")
    assert store.manifest() == before
    store.close()


def test_index_kind_is_exact_when_small_and_ivf_when_large():
    from rag.vector_index import EXACT_MAX_VECTORS, index_kind, ivf_lists

    assert index_kind(2_000) == "flat"
    assert index_kind(EXACT_MAX_VECTORS) == "flat"
    assert index_kind(EXACT_MAX_VECTORS + 1) == "ivf-sq8"
    assert ivf_lists(1_000_000) == 4096
    assert ivf_lists(100_000) == 1024
    assert ivf_lists(3_000) * 64 <= 3_000


def test_ivf_index_finds_what_exact_search_finds():
    import faiss
    import numpy as np

    from rag.vector_index import IVF_TARGET_RECALL, build_index, recall_at

    rng = np.random.default_rng(7)
    n, d = 20_000, 64
    centres = rng.normal(size=(300, d)).astype(np.float32)
    x = centres[rng.integers(0, 300, n)] + rng.normal(scale=0.3, size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(100, 100 + n, dtype=np.int64)

    def batches():
        for i in range(0, n, 6_000):
            yield ids[i:i + 6_000], x[i:i + 6_000]

    index = build_index(d, n, batches, kind="ivf-sq8")
    assert index.ntotal == n
    ivf = faiss.extract_index_ivf(index)
    assert isinstance(faiss.downcast_index(ivf), faiss.IndexIVFScalarQuantizer)
    assert 1 <= ivf.nprobe < ivf.nlist
    q = x[rng.choice(n, 300, replace=False)] + rng.normal(scale=0.2, size=(300, d)).astype(
        np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, exact = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(q, 10)
    assert recall_at(found, ids[exact]) >= IVF_TARGET_RECALL - 0.03
    assert recall_at(ids[exact], ids[exact]) == 1.0


def test_neighbour_contexts_hold_what_the_chunk_does_not():
    from rag.chunking import neighbour_contexts

    text = "One a. Two b. Three c. Four d."
    # chunks overlapping by one sentence: [One, Two], [Two, Three], [Three, Four]
    spans = [(0, 13), (7, 22), (14, 30)]
    assert [text[a:b] for a, b in spans] == ["One a. Two b.", "Two b. Three c.",
                                             "Three c. Four d."]
    assert neighbour_contexts(text, spans) == ["Three c.", "One a.\nFour d.", "Two b."]
    assert neighbour_contexts(text, [(0, 30)]) == [""]
    assert neighbour_contexts(text, []) == []


def test_full_text_index_holds_each_chunks_neighbours(fresh_settings, seed_copy):
    import sqlite3

    from rag.chunking import neighbour_contexts
    from rag.store import DB_NAME

    ingest([seed_copy], fresh_settings)
    db = sqlite3.connect(fresh_settings.index_dir / DB_NAME)
    for source, text in db.execute("SELECT source, text FROM documents"):
        rows = db.execute("SELECT c.start, c.end, c.text, f.text, f.context FROM chunks c "
                          "JOIN chunks_fts f ON f.rowid = c.id WHERE c.source = ? "
                          "ORDER BY c.id", (source,)).fetchall()
        assert len(rows) > 1
        assert [r[3] for r in rows] == [r[2] for r in rows]
        assert [r[4] for r in rows] == neighbour_contexts(text, [(r[0], r[1]) for r in rows])
        assert all(r[4] for r in rows)
    db.close()


def _as_format_2(index_dir):
    """Rewrite an index as format 2 wrote it: the full-text index without the context."""
    import sqlite3

    from rag.store import DB_NAME

    db = sqlite3.connect(index_dir / DB_NAME)
    with db:
        db.execute("DROP TABLE chunks_fts")
        db.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, "
                   "tokenize='porter unicode61')")
        db.execute("INSERT INTO chunks_fts (rowid, text) SELECT id, text FROM chunks")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    db.close()


def test_format_2_index_is_upgraded_in_place_without_embedding_again(fresh_settings,
                                                                      seed_copy):
    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    expected = store.lexical_search(["missile", "launch"], 10)
    before = store.manifest()
    vectors = store.vectors([r for r, _ in expected])
    store.close()
    _as_format_2(fresh_settings.index_dir)

    store, emb = open_store(fresh_settings)  # a reader upgrades it
    assert store.manifest() == before  # same generation, documents and chunks
    assert store.lexical_search(["missile", "launch"], 10) == expected
    assert (store.vectors([r for r, _ in expected]) == vectors).all()
    rows = [r for r, _ in expected]
    both = store.chunks_and_vectors(rows)  # what a search reads: the same rows in one query
    chunks = store.chunks_by_rowid(rows)
    assert set(both) == set(rows)
    for j, r in enumerate(rows):
        assert both[r][0] == chunks[r] and (both[r][1] == vectors[j]).all()
    store.close()
    manifest = json.loads((fresh_settings.index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert ingest([seed_copy], fresh_settings).n_chunks == 0  # nothing to embed again


def _open_read_only(monkeypatch):
    """From here on the index opens as a copy on read-only media does (BM25's private
    in-memory table stays writable)."""
    import sqlite3

    real_connect = sqlite3.connect

    def read_only(path, *args, **kwargs):
        if str(path) == ":memory:":
            return real_connect(path, *args, **kwargs)
        return real_connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)


def test_format_2_index_that_cannot_be_written_names_the_fix(fresh_settings, seed_copy,
                                                             monkeypatch):

    ingest([seed_copy], fresh_settings)
    _as_format_2(fresh_settings.index_dir)
    _open_read_only(monkeypatch)
    with pytest.raises(IndexMismatch, match="format 2 and could not be upgraded.*delete the "
                                            "folder and re-run `rag ingest`"):
        open_store(fresh_settings)


def test_many_opening_one_new_index_at_once_all_succeed(tmp_path):
    # SQLite refuses the switch to write-ahead logging at once, without waiting out the busy
    # timeout, when another connection is creating the same file: the loser must ask again.
    # The old code lost about one round in sixty here.
    import threading
    failures = []

    def open_it(index, barrier):
        barrier.wait()
        try:
            Store.open(index, "model", "fingerprint", 4, create=True).close()
        except Exception as e:  # any failure is the finding
            failures.append(e)

    for round_ in range(200):
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=open_it, args=(tmp_path / f"index{round_}", barrier))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def _without_sentences(index_dir, columns=("sentences", "tokens")):
    """Rewrite an index as rag wrote it before chunks held their sentences (and their token
    codes, which came later still: columns=("tokens",) is an index of that time)."""
    import sqlite3

    from rag.store import DB_NAME

    db = sqlite3.connect(index_dir / DB_NAME)
    with db:
        for column in columns:
            db.execute(f"ALTER TABLE chunks DROP COLUMN {column}")
    db.close()


def test_every_chunk_holds_its_token_codes_when_late_interaction_is_on(fresh_settings,
                                                                       seed_copy):
    from rag.minilm import LATE_SKIP, token_codes

    ingest([seed_copy], fresh_settings)  # off: none written, none filled in
    store, emb = open_store(fresh_settings)
    assert store.db.execute("SELECT count(tokens) FROM chunks").fetchone() == (0,)
    assert store.chunks_without_sentences(1000) == []
    store.close()
    late = fresh_settings.with_(late_interaction=True)
    ingest([seed_copy], late)  # on: the same chunks gain their codes
    store, emb = open_store(late)
    rows = store.db.execute("SELECT id, text, tokens FROM chunks ORDER BY id").fetchall()
    codes = store.token_codes([r for r, _, _ in rows])
    tokenizer = emb._model.base.tokenizer
    for rowid, text, blob in rows:
        kept = [t for t in tokenizer.encode(text).tokens[1:-1] if t not in LATE_SKIP]
        assert codes[rowid].shape == (len(kept), emb.dimension // 8)
        assert len(blob) == len(kept) * 48
    # a passage embedded alone: its codes are the signs of the states its question-side
    # twin reads, bit for bit
    text = rows[0][1]
    _, states = emb._model.encode_question(text)
    _, _, alone = emb._model.encode_with_spans([text], [[]], codes=True)
    assert np.array_equal(alone[0], token_codes(states))
    assert np.array_equal(alone[0], codes[rows[0][0]]) or \
        (np.unpackbits(alone[0]) != np.unpackbits(codes[rows[0][0]])).mean() < 0.01  # padding
    store.close()


def test_index_without_token_codes_gains_them_at_the_next_ingest(fresh_settings, seed_copy):
    from rag.retrieve import Retriever, late_interaction

    fresh_settings = fresh_settings.with_(late_interaction=True)
    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    before = store.db.execute("SELECT id, vector, sentences FROM chunks ORDER BY id").fetchall()
    question = "Where did the missile land?"
    expected = [h.chunk.chunk_id for h in Retriever(store, emb, late=True).search(question, k=3)]
    store.close()
    _without_sentences(fresh_settings.index_dir, ("tokens",))

    store, emb = open_store(fresh_settings)  # gains the empty column
    everything = [r for r, _, _ in before]
    qtokens = emb.embed_question(question)[1]
    assert late_interaction(store, emb, qtokens, everything) == []  # searched without it
    assert Retriever(store, emb, late=True).search(question, k=3)
    store.close()

    report = ingest([seed_copy], fresh_settings)
    assert report.n_chunks == 0 and len(report.unchanged) == 3
    store, emb = open_store(fresh_settings)
    assert store.db.execute("SELECT id, vector, sentences FROM chunks ORDER BY id").fetchall() \
        == before  # rows, vectors and sentences untouched
    store.faiss_index()
    assert len(late_interaction(store, emb, qtokens, everything)) == len(everything)
    # the same passages first as from an index written with the codes
    assert [h.chunk.chunk_id for h in
            Retriever(store, emb, late=True).search(question, k=3)][0] == expected[0]
    store.close()


def test_every_chunk_holds_its_sentences_spans_and_vectors(fresh_settings, seed_copy):
    from rag.chunking import split_sentences
    from rag.layout import unpack_sentences, widen

    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    rows = store.db.execute("SELECT text, sentences FROM chunks").fetchall()
    assert rows and all(blob is not None for _, blob in rows)
    for text, blob in rows:
        spans, vectors = unpack_sentences(blob, emb.dimension)
        assert [tuple(s) for s in spans.tolist()] == split_sentences(text)
        assert np.allclose(np.linalg.norm(widen(vectors), axis=1), 1, atol=3e-3)
    # each sentence, embedded alone, is nearest its own vector read in the passage
    text, blob = rows[0]
    spans, vectors = unpack_sentences(blob, emb.dimension)
    alone = emb.embed([text[a:b] for a, b in spans])
    cosines = alone @ widen(vectors).T
    assert len(spans) > 1 and (cosines.argmax(axis=1) == np.arange(len(spans))).all(), cosines
    store.close()


def test_sentence_scores_rank_chunks_by_their_best_sentence(fresh_settings, seed_copy):
    from rag.layout import unpack_sentences, widen

    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    store.faiss_index()
    rows = store.db.execute("SELECT id, sentences FROM chunks ORDER BY id").fetchall()
    rowid, blob = rows[-1]
    _, vectors = unpack_sentences(blob, emb.dimension)
    query = widen(vectors[-1])
    query /= np.linalg.norm(query)
    everything = [r for r, _ in rows]
    scored = store.sentence_scores(query, everything[::-1])
    assert scored[0][0] == rowid and scored[0][1] == pytest.approx(1.0, abs=1e-3)
    assert sorted(r for r, _ in scored) == everything  # one entry a chunk
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    for r, score in scored[:5]:  # each the best of its own sentences
        _, v = unpack_sentences(dict(rows)[r], emb.dimension)
        assert score == pytest.approx(float((widen(v) @ query).max()), abs=1e-5)
    # only the chunks asked about, and none that is not in the index
    assert [r for r, _ in store.sentence_scores(query, [everything[1], 10 ** 9])] == \
        [everything[1]]
    assert store.sentence_scores(query, []) == []
    store.close()


def test_sentence_vectors_are_stored_in_bfloat16_rounded_to_nearest():
    from rag.layout import pack_sentences, unpack_sentences, widen

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spans, stored = unpack_sentences(pack_sentences([(0, 5), (6, 9), (10, 20)], vectors), 384)
    assert spans.tolist() == [[0, 5], [6, 9], [10, 20]]
    back = widen(stored)
    assert (np.abs(back - vectors) <= np.abs(vectors) * 2.0 ** -8).all()  # half a unit
    # nearest: never further than the other neighbour (bfloat16 truncation is up to 2x off)
    truncated = (vectors.view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert (np.abs(back - vectors) <= np.abs(truncated - vectors)).all()
    assert (np.sum(back * vectors, axis=1) > 0.99999).all()
    assert np.array_equal(widen(stored[:0]), np.zeros((0, 384), dtype=np.float32))


def test_index_without_sentences_is_searched_without_them_until_ingest_fills_them_in(
        fresh_settings, seed_copy):
    from rag.retrieve import Retriever

    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    vectors_before = store.db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
    store.close()
    _without_sentences(fresh_settings.index_dir)

    store, emb = open_store(fresh_settings)  # gains the empty column
    assert store.db.execute("SELECT count(sentences) FROM chunks").fetchone() == (0,)
    question = "Where did the missile land?"
    hits = Retriever(store, emb).search(question, k=3)
    everything = [r for r, _ in vectors_before]
    assert hits and store.sentence_scores(emb.embed([question])[0], everything) == []
    store.close()

    report = ingest([seed_copy], fresh_settings)
    assert report.n_chunks == 0 and len(report.unchanged) == 3
    store, emb = open_store(fresh_settings)
    # the chunks are the same rows with the same vectors; only their sentences were added
    assert store.db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall() == \
        vectors_before
    assert store.db.execute("SELECT count(*) - count(sentences) FROM chunks").fetchone() == (0,)
    store.faiss_index()
    assert len(store.sentence_scores(emb.embed([question])[0], everything)) == len(everything)
    store.close()


def test_read_only_index_without_sentences_still_answers(fresh_settings, seed_copy,
                                                         monkeypatch):
    from rag.retrieve import Retriever

    ingest([seed_copy], fresh_settings)
    _without_sentences(fresh_settings.index_dir)
    _open_read_only(monkeypatch)
    store, emb = open_store(fresh_settings)
    assert Retriever(store, emb).search("Where did the missile land?", k=3)
    store.close()


def test_sentence_search_is_off_above_its_size_limit(fresh_settings, seed_copy, monkeypatch):
    import rag.store

    ingest([seed_copy], fresh_settings)
    store, emb = open_store(fresh_settings)
    store.faiss_index()
    query = emb.embed(["Where did the missile land?"])[0]
    everything = list(store._chunk_ids())
    assert store.sentence_scores(query, everything)
    monkeypatch.setattr(rag.store, "SENTENCE_SEARCH_MAX", store.manifest().n_chunks - 1)
    store._sentences_generation = -1
    assert store.sentence_scores(query, everything) == []
    store.close()


def test_sentences_are_filled_in_only_where_searches_would_use_them(fresh_settings, seed_copy,
                                                                     monkeypatch):
    import rag.store

    ingest([seed_copy], fresh_settings)
    _without_sentences(fresh_settings.index_dir)
    store, _ = open_store(fresh_settings)
    n = store.manifest().n_chunks
    assert len(store.chunks_without_sentences(n + 5)) == n
    monkeypatch.setattr(rag.store, "SENTENCE_SEARCH_MAX", n - 1)
    assert store.chunks_without_sentences(n + 5) == []
    store.close()
    generation = json.loads((fresh_settings.index_dir / "manifest.json").read_text())
    ingest([seed_copy], fresh_settings)  # nothing to do: the index is past the limit
    assert json.loads((fresh_settings.index_dir / "manifest.json").read_text()) == generation


def test_a_chunk_without_sentences_is_left_out_of_the_sentence_list():
    from rag.layout import pack_sentences, unpack_sentences
    from rag.vector_index import SentenceIndex

    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    blobs = [pack_sentences([(0, 1), (2, 3)], v[:2]), pack_sentences([], v[:0]),
             pack_sentences([(0, 4)], v[2:])]
    parts = [unpack_sentences(b, 8)[1] for b in blobs]
    index = SentenceIndex(np.array([4, 7, 9]), np.array([len(p) for p in parts]),
                          np.vstack(parts))
    scored = dict(index.best(v[2], [4, 7, 9]))
    assert set(scored) == {4, 9}
    assert scored[9] == pytest.approx(1.0, abs=1e-2)
    assert scored[4] == pytest.approx(float(np.max(v[:2] @ v[2])), abs=1e-2)
    assert index.best(v[2], [7]) == []
