import re
from pathlib import Path

import numpy as np
import pytest

from rag.ingest import ingest
from rag.retrieve import Retriever, fuse, rerank_by_sentence
from rag.store import open_store
from rag.text import search_words, whole_words
from rag.types import Chunk


def test_search_words_leave_out_stopwords():
    assert search_words("How many of the troops were killed?") == ["many", "troops", "killed"]
    assert search_words("the of and") == []


def test_hybrid_search_finds_the_passage(seed_settings):
    store, emb = open_store(seed_settings)
    hits = Retriever(store, emb).search("How many North Korean personnel were killed?", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert any("600" in h.chunk.text for h in hits)
    assert hits[0].score >= hits[-1].score
    store.close()


def test_hybrid_search_ranks_by_sentences_unless_told_not_to(seed_settings, monkeypatch):
    store, emb = open_store(seed_settings)
    question = "How many North Korean personnel were killed?"
    asked = []
    real = store.sentence_scores
    monkeypatch.setattr(store, "sentence_scores",
                        lambda q, rowids: asked.append(list(rowids)) or real(q, rowids))
    with_sentences = Retriever(store, emb).search(question, k=3)
    assert len(asked) == 1 and len(asked[0]) >= 3  # the candidates of both lists
    without = Retriever(store, emb, sentences=False).search(question, k=3)
    assert len(asked) == 1
    assert with_sentences and without
    assert {h.chunk.chunk_id for h in with_sentences} & {h.chunk.chunk_id for h in without}
    store.close()


def test_each_mode_returns_results(seed_settings):
    store, emb = open_store(seed_settings)
    for mode in ("dense", "lexical", "hybrid"):
        hits = Retriever(store, emb, mode).search("1953 armistice Korean War", k=2)
        assert any("1953" in h.chunk.text for h in hits), mode
    store.close()


def test_near_duplicates_collapse_and_remember_their_sources(fresh_settings, tmp_path):
    docs = tmp_path / "dupes"
    docs.mkdir()
    text = "The harbour bridge will close for repairs on 3 May, the city council said."
    (docs / "a.txt").write_text(text)
    (docs / "b.txt").write_text(text.replace("said", "announced"))
    (docs / "c.txt").write_text("Apples are harvested in the autumn across the valley.")
    ingest([docs], fresh_settings)
    store, emb = open_store(fresh_settings)
    hits = Retriever(store, emb).search("When does the bridge close?", k=3)
    assert len(hits) == 2
    assert len(hits[0].also_in) == 1
    assert {hits[0].chunk.source, hits[0].also_in[0]} == {str(docs / "a.txt"),
                                                          str(docs / "b.txt")}
    store.close()


def test_zscore_fusion_weighs_both_lists_and_gives_the_missing_their_lowest():
    dense = [(1, 0.9), (2, 0.5), (3, 0.4)]
    lexical = [(3, 12.0), (4, 3.0), (1, 2.0)]
    fused = fuse(dense, lexical)
    assert set(fused) == {1, 2, 3, 4}
    order = sorted(fused, key=lambda r: -fused[r])
    assert order[0] in (1, 3)  # first in one list, present in the other
    assert fused[2] < fused[3]  # 2 is absent from BM25: scored there as its lowest
    assert fuse(dense, []) == dict(dense)  # one list: its own scores


def test_sentences_are_a_third_list_at_their_own_weights():
    from rag.retrieve import TUNED

    dense = [(1, 0.9), (2, 0.5), (3, 0.4)]
    lexical = [(3, 12.0), (4, 3.0), (1, 2.0)]
    sentences = [(2, 0.8), (5, 0.7), (1, 0.3)]
    fused = fuse(dense, lexical, sentences=sentences)
    assert set(fused) == {1, 2, 3, 4, 5}

    def z(ranking):
        values = np.array([v for _, v in ranking])
        zs = (values - values.mean()) / values.std()
        return dict(zip([r for r, _ in ranking], zs)), zs.min()

    lists = [z(r) for r in (dense, lexical, sentences)]
    for rowid in fused:
        expected = sum(w * zs.get(rowid, low) for w, (zs, low) in zip(TUNED.list_weights, lists))
        assert fused[rowid] == pytest.approx(expected)
    # the best sentence lifts passage 2 above 3, which two lists alone put first
    assert fuse(dense, lexical)[3] > fuse(dense, lexical)[2]
    assert fused[2] > fused[3]
    rrf = fuse(dense, lexical, "rrf", sentences)
    assert rrf[5] == pytest.approx(1 / 62) and rrf[1] > rrf[2]


def test_rrf_fusion_remains_available():
    fused = fuse([(1, 0.9), (2, 0.5)], [(2, 7.0), (3, 1.0)], "rrf")
    assert max(fused, key=fused.get) == 2


def test_lexical_search_sees_the_neighbouring_chunk(fresh_settings, tmp_path):
    """The name is in one chunk, the figure asked for in the next: BM25 over the chunk alone
    prefers another document with the question's other words."""
    from rag.retrieve import TUNED

    docs = tmp_path / "news"
    docs.mkdir()
    (docs / "brewery.txt").write_text(
        "The Varnholt brewery opened a second site beside the old harbour in Tromso last "
        "spring, after years of planning and two failed bids. "
        "Its quarterly revenue rose by forty percent after the opening, and the owners hired "
        "thirty more staff for the summer season.")
    (docs / "bakery.txt").write_text(
        "Quarterly revenue at the regional bakery was flat, its manager said on Monday, as "
        "flour prices and energy bills stayed high all winter.")
    for i, topic in enumerate(("ferry timetables", "school meals", "road repairs",
                               "library hours", "tram fares", "park lighting")):
        (docs / f"other{i}.txt").write_text(f"The council reviewed {topic} on Monday.")
    settings = fresh_settings.with_(chunk_tokens=40)
    ingest([docs], settings)
    store, emb = open_store(settings)
    brewery = [c for _, c in store.all_chunks(str(docs / "brewery.txt"))]
    assert len(brewery) == 2 and "Varnholt" not in brewery[1].text
    question = "By how much did the quarterly revenue of Varnholt rise?"
    alone = store.lexical_search(search_words(question), 3, context_weight=0.0)
    first = alone[0][0]
    assert store.chunks_by_rowid([first])[first].source == str(docs / "bakery.txt")
    hits = Retriever(store, emb, "lexical").search(question, k=3)
    assert TUNED.context_weight > 0
    assert [h.chunk.text for h in hits] == [brewery[1].text, brewery[0].text,
                                            store.document_text(str(docs / "bakery.txt"))]
    store.close()


def _chunks(*texts):
    return {i: Chunk(f"c{i}", f"d{i}.txt", 0, len(t), t, len(t.split()))
            for i, t in enumerate(texts)}


def test_a_passage_whose_one_sentence_holds_the_question_moves_up():
    chunks = _chunks(
        "The Rhine flows north. Basel is a city of bridges. Many ships pass the port.",
        "Ships from Basel reach the Rhine delta in four days. The trip is slow.",
        "Weather in the valley is mild. Grapes grow on the slopes.")
    fused = {0: 1.0, 1: 0.8, 2: 0.1, 3: -0.5}  # rowid 3: below the pool, left alone
    moved = rerank_by_sentence("How long do ships from Basel take to reach the Rhine delta?",
                               [0, 1, 2], chunks, fused)
    assert sorted(moved, key=lambda r: -moved[r])[:2] == [1, 0]
    assert moved[3] == fused[3]
    assert max(moved.values()) - min(moved.values()) < 3 * (max(fused.values()) -
                                                            min(fused.values()))


def test_sentence_rerank_leaves_a_pool_it_cannot_tell_apart():
    chunks = _chunks("Nothing about it here.", "Nor here, at all.")
    fused = {0: 0.7, 1: 0.2}
    assert rerank_by_sentence("Which river passes Basel?", [0, 1], chunks, fused) == fused
    assert rerank_by_sentence("the of and", [0, 1], chunks, fused) == fused


def test_whole_words_finds_what_the_word_boundary_pattern_finds():
    import random

    texts = ["the war in warsaw; war-time wars, _war war_ war2 2war war",
             "naïve café: café's naïveté, déjà-vu (déjà) vu",
             "x" * 40 + " x " + "x", "", "war"]
    seeds = Path(__file__).resolve().parent.parent / "seeds"
    texts += [p.read_text().lower() for p in sorted(seeds.glob("*.txt"))]
    rng = random.Random(7)
    vocab = sorted({w for t in texts for w in re.findall(r"\w+", t)})
    for text in texts:
        for _ in range(30):
            words = set(rng.sample(vocab, 5)) | {"war", "x", "café", "vu"}
            pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b")
            assert sorted(whole_words(text, words)) == \
                sorted((m.start(), m.group()) for m in pattern.finditer(text))


def test_late_interaction_scores_every_candidate_or_none(fresh_settings, seed_copy):
    from rag.retrieve import late_interaction
    from rag.store import open_store

    late = fresh_settings.with_(late_interaction=True)
    ingest([seed_copy], late)
    store, emb = open_store(late)
    store.faiss_index()
    everything = store._chunk_ids().tolist()
    qtokens = emb.embed_question("How many North Korean personnel have been deployed?")[1]
    scored = late_interaction(store, emb, qtokens, everything)
    assert sorted(r for r, _ in scored) == sorted(everything)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    # a candidate without codes (not in the index): the list is left out, not mixed
    assert late_interaction(store, emb, qtokens, everything + [10 ** 9]) == []
    assert late_interaction(store, emb, qtokens, []) == []
    store.close()


def test_late_interaction_is_a_list_of_its_own_when_asked_for(seed_settings, monkeypatch):
    import rag.retrieve
    from rag.config import Settings

    store, emb = open_store(seed_settings)
    question = "How many North Korean personnel were killed?"
    calls = []
    real = rag.retrieve.late_interaction
    monkeypatch.setattr(rag.retrieve, "late_interaction",
                        lambda *a: calls.append(a[3]) or real(*a))
    without = Retriever(store, emb).search(question, k=3)
    assert calls == []  # off by default
    with_late = Retriever(store, emb, late=True).search(question, k=3)
    assert len(calls) == 1 and len(calls[0]) >= 3  # over the candidates of both lists
    assert without and with_late and any("600" in h.chunk.text for h in with_late)
    store.close()
    monkeypatch.setenv("RAG_LATE_INTERACTION", "1")
    assert Settings.from_env().late_interaction
    monkeypatch.setenv("RAG_LATE_INTERACTION", "0")
    assert not Settings.from_env().late_interaction
