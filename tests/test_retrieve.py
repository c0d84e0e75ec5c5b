from rag.ingest import ingest, open_store
from rag.retrieve import Retriever, fuse, lexical_query


def test_lexical_query_quotes_content_words():
    assert lexical_query("How many of the troops were killed?") == \
        '"many" OR "troops" OR "killed"'
    assert lexical_query("the of and") == ""


def test_hybrid_search_finds_the_passage(seed_settings):
    store, emb = open_store(seed_settings)
    hits = Retriever(store, emb).search("How many North Korean personnel were killed?", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert any("600" in h.chunk.text for h in hits)
    assert hits[0].score >= hits[-1].score
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


def test_rrf_fusion_remains_available():
    fused = fuse([(1, 0.9), (2, 0.5)], [(2, 7.0), (3, 1.0)], "rrf")
    assert max(fused, key=fused.get) == 2
