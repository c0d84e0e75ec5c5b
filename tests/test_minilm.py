"""rag's encoders give sentence-transformers' vectors: the torch one rag embeds every text
with, and the numpy one it is checked against."""

import ast
import subprocess
import sys

import numpy as np
import pytest

from rag.config import Settings
from rag.minilm import MiniLM, supports
from rag.registry import resolve_embedding

from .conftest import SEEDS


@pytest.fixture(scope="module")
def model_path():
    return resolve_embedding("all-minilm-l6-v2", Settings.from_env()).path


def _texts() -> list[str]:
    seed = sorted(SEEDS.glob("*.txt"))[0].read_text(encoding="utf-8")
    words = seed.split()
    return [
        "How many North Korean personnel have been deployed to Russia?",
        "x", "", "   ", "ÜBER naïve café — 東京 🚀 ½ ﬁ",
        "Numbers: 15,000 troops; $3.2bn; 1998-2001; 42%.",
        " ".join(words[:40]),
        " ".join(words[:300]),  # past the 256-token limit: truncated like sentence-transformers
        " ".join(words[:180]),
        "The the the the " * 70,
    ]


def test_supports_the_bundled_model(model_path, tmp_path):
    assert supports(model_path)
    assert not supports(tmp_path)


def test_vectors_match_sentence_transformers(model_path):
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    st = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    st.max_seq_length = 256
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    mine = MiniLM(model_path, 256).encode(texts)
    assert mine.shape == ref.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    cos = (mine * ref).sum(axis=1)
    assert cos.min() >= 0.9999, cos
    # order and batching do not change a text's vector
    again = MiniLM(model_path, 256).encode(texts[::-1], batch_size=3)[::-1]
    assert np.allclose(again, mine, atol=1e-5)


def test_torch_engine_matches_sentence_transformers(model_path):
    """The torch forward (ingest's engine) gives sentence-transformers' vectors: to float32
    rounding in float32, within bfloat16's rounding in bfloat16; a text's vector does not
    depend on the batch it shares (padding is masked) or on the batch size."""
    from sentence_transformers import SentenceTransformer

    from rag.minilm import TorchMiniLM

    texts = _texts()
    st = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    st.max_seq_length = 256
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    base = MiniLM(model_path, 256)
    for bf16, floor in ((False, 0.99999), (True, 0.9999)):
        engine = TorchMiniLM(base, bf16=bf16)
        mine = engine.encode(texts, batch_size=64)
        assert mine.shape == ref.shape
        assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
        cos = (mine * ref).sum(axis=1)
        assert cos.min() >= floor, (bf16, cos)
        alone = np.vstack([engine.encode([t]) for t in texts])
        assert (alone * mine).sum(axis=1).min() >= floor
        by_three = engine.encode(texts[::-1], batch_size=3)[::-1]
        assert (by_three * mine).sum(axis=1).min() >= floor


def test_the_compiled_forward_is_the_eager_one_bit_for_bit(model_path):
    """TorchScript compiles rag's forward (a silent fall-back to eager would keep the vectors
    but lose the speed), and the compiled pass gives exactly the eager pass's numbers, alone
    and in padded batches, in float32 and bfloat16."""
    import torch

    from rag import torch_forward
    from rag.minilm import TorchMiniLM, _padded

    assert isinstance(torch_forward.compiled(), torch.jit.ScriptFunction)
    base = MiniLM(model_path, 256)
    texts = _texts()
    batches = [[base.tokenizer.encode(t).ids] for t in texts[:3]]
    batches.append([base.tokenizer.encode(t).ids for t in texts])
    for bf16 in (False, True):
        engine = TorchMiniLM(base, bf16=bf16)
        for batch in batches:
            ids, mask = (torch.from_numpy(a) for a in _padded(batch))
            with torch.inference_mode():
                eager = torch_forward.forward(ids, mask.bool(), *engine.params)[0].numpy()
            assert np.array_equal(engine._forward(batch), eager), (bf16, len(batch))


def test_ingest_embeds_with_torch_alone(tmp_path):
    """A bulk ingest loads torch, not sentence-transformers or transformers (~2.5 s more)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    seed = sorted(SEEDS.glob("*.txt"))[0].read_text(encoding="utf-8")
    words = seed.split()
    for i in range(60):  # past MEMO_CALL_TEXTS distinct chunks: ingest's own batches
        rotated = words[i * 7:] + words[:i * 7]
        (docs / f"{i}.txt").write_text(f"Report {i}. " + " ".join(rotated), encoding="utf-8")
    loaded = _heavy_modules_after(["ingest", str(docs), "--json",
                                   "--index", str(tmp_path / "index")])
    assert loaded == ["torch"]


def test_a_question_and_a_chunk_go_through_one_engine(model_path):
    """A question gets the same vector alone, among others, and in a batch as ingest embeds:
    one engine, so an answer does not depend on what the process embedded before."""
    from rag.embedder import MEMO_CALL_TEXTS, Embedder

    spec = resolve_embedding("all-minilm-l6-v2", Settings.from_env())
    texts = _texts()
    e = Embedder(spec)
    alone = e.embed([texts[0]])
    assert "_model" in e.__dict__  # the question itself loaded the torch engine
    crowd = [f"Passage {i}: " + t for i, t in enumerate(texts * 30)][:MEMO_CALL_TEXTS + 1]
    many = Embedder(spec).embed([texts[0]] + crowd)
    assert float(alone[0] @ many[0]) >= 0.99999
    reference = MiniLM(model_path, 256).encode(texts[:1])
    assert float(alone[0] @ reference[0]) >= 0.9999


def test_bulk_vectors_in_bfloat16_stay_close_to_float32(model_path, monkeypatch):
    from rag.embedder import Embedder

    spec = resolve_embedding("all-minilm-l6-v2", Settings.from_env())
    texts = _texts()
    reference = MiniLM(model_path, 256).encode(texts)
    for forced in ("0", "1"):
        monkeypatch.setenv("RAG_EMBED_BF16", forced)
        e = Embedder(spec)
        assert e.bf16 is (forced == "1")
        bulk = e.embed(texts)
        assert np.allclose(np.linalg.norm(bulk, axis=1), 1.0, atol=1e-5)
        cos = (bulk * reference).sum(axis=1)
        assert cos.min() >= (0.9999 if forced == "1" else 0.99999), cos



def test_bulk_batches_by_token_length_keep_each_text_in_its_row(model_path):
    from rag.embedder import Embedder

    spec = resolve_embedding("all-minilm-l6-v2", Settings.from_env())
    e = Embedder(spec)
    texts = _texts()
    lengths = e.count_tokens(texts)
    reference = MiniLM(model_path, 256).encode(texts)
    # batches of 3 so that the order matters; lengths given as ingest gives them, and wrong
    bulk = e._embed(texts, batch_size=3, lengths=lengths)
    assert (bulk * reference).sum(axis=1).min() >= 0.9999
    scrambled = e._embed(texts, batch_size=3, lengths=lengths[::-1])
    assert (scrambled * reference).sum(axis=1).min() >= 0.9999

def test_ask_imports_torch_but_not_sentence_transformers(seed_settings):
    loaded = _heavy_modules_after(["ask", "Who signed the treaty?", "--json",
                                   "--index", str(seed_settings.index_dir)])
    assert loaded == ["torch"]


def _heavy_modules_after(args: list[str]) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `rag ARGS`."""
    code = ("import sys; from typer.testing import CliRunner; from rag.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); "
            "assert r.exit_code == 0, r.output; "
            "print([m for m in ('torch', 'sentence_transformers', 'transformers', 'sklearn') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_recent_texts_are_not_embedded_twice():
    from rag.embedder import Embedder

    e = Embedder(resolve_embedding("all-minilm-l6-v2", Settings.from_env()))
    first = e.embed(["Who signed the treaty?", "The treaty was signed in May."])

    def refuse(*_a, **_k):
        raise AssertionError("embedded again")

    e._embed = refuse
    again = e.embed(["The treaty was signed in May.", "Who signed the treaty?"])
    assert np.array_equal(again, first[::-1])
    assert e.embed([]).shape == (0, 384)


def test_a_full_memo_keeps_the_texts_of_the_call_that_fills_it(monkeypatch):
    """When a call brings the memo past its size, the memo is emptied but for that call's own
    texts: one it already held is still there to read back (it was a KeyError)."""
    import rag.embedder
    from rag.embedder import Embedder

    monkeypatch.setattr(rag.embedder, "MEMO_TEXTS", 4)
    e = Embedder(resolve_embedding("all-minilm-l6-v2", Settings.from_env()))
    held = e.embed(["Who signed the treaty?", "Where was it signed?", "When?"])
    mixed = e.embed(["Where was it signed?", "A new question.", "Another new one."])
    assert np.array_equal(mixed[0], held[1])
    assert set(e._memo) == {"Where was it signed?", "A new question.", "Another new one."}
    assert np.array_equal(mixed, e.embed(["Where was it signed?", "A new question.",
                                          "Another new one."]))


def test_span_vectors_are_the_mean_of_their_tokens_in_the_whole_passage(model_path):
    """encode_with_spans: the texts' own vectors are encode's, bit for bit, and a span's
    vector is the normalised mean of the last layer's states of the tokens inside it, read
    in the passage (the same states sentence-transformers gives per token, in float32);
    a span past the model's length limit gets a zero row."""
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.chunking import split_sentences
    from rag.minilm import TorchMiniLM

    texts = ["Lady Gaga performed the national anthem. Marlee Matlin provided the sign "
             "language translation. The game was played in Santa Clara.",
             "One sentence alone.", "It begins here. " + "word " * 400 + "and stops. The end."]
    spans = [split_sentences(t) for t in texts]
    engine = TorchMiniLM(MiniLM(model_path, 256), bf16=False)
    vectors, parts = engine.encode_with_spans(texts, spans, batch_size=2)
    assert np.array_equal(vectors, engine.encode(texts, batch_size=2))
    assert [len(p) for p in parts] == [3, 1, 3]
    assert parts[2][0].any() and parts[2][1].any()
    assert not parts[2][2].any()  # "The end." lies beyond the 256 tokens the model reads

    st = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    st.max_seq_length = 256
    tokens = st.encode(texts[:1], output_value="token_embeddings")[0]
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.numpy()
    offsets = st.tokenizer(texts[0], return_offsets_mapping=True)["offset_mapping"]
    for (start, end), mine in zip(spans[0], parts[0]):
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
        ref = tokens[inside].mean(0)
        ref /= np.linalg.norm(ref)
        assert float(mine @ ref) > 0.99999
    # each sentence's vector is its own: the question about it finds it first
    question = engine.encode(["Who signed the translation?"])[0]
    assert int(np.argmax(parts[0] @ question)) == 1


def test_a_model_rag_does_not_run_itself_embeds_each_sentence_alone():
    """Through sentence-transformers (any model that is not a plain mean-pooled BERT), a
    sentence's vector is the sentence embedded as a text of its own."""
    from rag.chunking import split_sentences
    from rag.embedder import Embedder

    settings = Settings.from_env()
    embedder = Embedder(resolve_embedding(settings.embedding_model, settings))
    embedder.own_forward = False  # as for a model rag.minilm does not support
    texts = ["Lady Gaga performed the national anthem. Marlee Matlin signed it.", "Alone."]
    spans = [split_sentences(t) for t in texts]
    vectors, parts = embedder.embed_with_sentences(texts, spans)
    assert embedder.engine == "sentence-transformers"
    assert np.allclose(vectors, embedder.embed(texts), atol=1e-6)
    assert [len(p) for p in parts] == [2, 1]
    alone = embedder.embed([t[a:b] for t, ss in zip(texts, spans) for a, b in ss])
    # the same texts, batched otherwise: equal to bfloat16's rounding where it computes in it
    assert (np.sum(np.vstack(parts) * alone, axis=1) > 0.999).all()


def test_a_question_gives_its_vector_and_the_states_of_the_tokens_late_interaction_reads(
        model_path):
    """encode_question: encode's vector bit for bit, and the unit last states of the tokens
    that are not function words or punctuation, in order; embed_question through the
    Embedder gives the same, and leaves the vector for `embed` to find."""
    from rag.embedder import Embedder
    from rag.minilm import LATE_SKIP, TorchMiniLM

    question = "Which hotel did the Broncos use for Super Bowl 50?"
    for bf16 in (False, True):
        engine = TorchMiniLM(MiniLM(model_path, 256), bf16=bf16)
        vector, states = engine.encode_question(question)
        assert np.array_equal(vector, engine.encode([question])[0])
        tokens = engine.base.tokenizer.encode(question).tokens
        assert [t for t in tokens[1:-1] if t not in LATE_SKIP] == \
            ["hotel", "broncos", "use", "super", "bowl", "50"]
        assert states.shape == (6, 384)
        assert np.allclose(np.linalg.norm(states, axis=1), 1.0, atol=1e-5)
    settings = Settings.from_env()
    embedder = Embedder(resolve_embedding(settings.embedding_model, settings))
    vector, states = embedder.embed_question(question)
    assert np.array_equal(vector, embedder.embed([question])[0])
    assert embedder.embed_question(question)[1] is states  # remembered
    other = Embedder(resolve_embedding(settings.embedding_model, settings))
    other.own_forward = False  # as for a model rag.minilm does not support
    vector, states = other.embed_question(question)
    assert states is None and np.allclose(vector, embedder.embed([question])[0], atol=1e-2)


def test_late_scores_sum_each_question_tokens_best_match():
    """late_scores against the arithmetic written out: signs, not bits, give the same order,
    and a block's score is the sum over question tokens of their best token's product."""
    from rag.minilm import late_scores, token_codes

    rng = np.random.default_rng(7)
    question = rng.standard_normal((5, 384)).astype(np.float32)
    passages = [rng.standard_normal((n, 384)).astype(np.float32) for n in (1, 7, 30)]
    blocks = [token_codes(p) for p in passages]
    got = late_scores(question, blocks, bf16=False)
    signs = [np.where(p > 0, 1.0, -1.0) for p in passages]
    bits = [(p > 0).astype(np.float64) for p in passages]
    expected = np.array([(question @ b.T).max(1).sum() for b in bits])
    assert np.allclose(got, expected, rtol=1e-5)
    by_signs = np.array([(question @ s.T).max(1).sum() for s in signs])
    assert np.array_equal(np.argsort(got), np.argsort(by_signs))
    assert np.allclose(late_scores(question, blocks, bf16=True), expected, rtol=2e-2, atol=0.5)
