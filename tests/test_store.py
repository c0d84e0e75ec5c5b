import json

import pytest

from rag.errors import IndexLocked, IndexMismatch, IndexMissing
from rag.ingest import ingest, open_store
from rag.store import FAISS_NAME, FORMAT_VERSION, Store


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
    from rag.store import EXACT_MAX_VECTORS, index_kind, ivf_lists

    assert index_kind(2_000) == "flat"
    assert index_kind(EXACT_MAX_VECTORS) == "flat"
    assert index_kind(EXACT_MAX_VECTORS + 1) == "ivf-sq8"
    assert ivf_lists(1_000_000) == 4096
    assert ivf_lists(100_000) == 1024
    assert ivf_lists(3_000) * 64 <= 3_000


def test_ivf_index_finds_what_exact_search_finds():
    import faiss
    import numpy as np

    from rag.store import IVF_TARGET_RECALL, build_index, recall_at

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
