from rag.chunking import chunk_document, split_sentences
from rag.config import Settings
from rag.embedder import get_embedder
from rag.loaders import load
from rag.registry import resolve_embedding
from rag.types import Document

from .conftest import SEEDS


def _embedder():
    return get_embedder(resolve_embedding("all-minilm-l6-v2", Settings()))


def test_sentences_keep_exact_offsets():
    text = "  First one. Second, with U.S. forces here! Third?\nFourth line"
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == [
        "First one.", "Second, with U.S. forces here!", "Third?", "Fourth line"]


def test_abbreviation_does_not_end_a_sentence():
    text = "He met Dr. Kim in the U.S. Army base. Then he left."
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "He met Dr. Kim in the U.S. Army base.", "Then he left."]


def test_a_sentence_begun_in_lower_case_is_still_a_sentence():
    # seeds/002: "... as potential areas for Russian assistance. in November, South Korea's ..."
    text = ("Experts pointed to areas for assistance. in November, officials said so. "
            "Acme Corp. said it, etc. and more. At 9 a.m. on Monday, Smith et al. found it.")
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Experts pointed to areas for assistance.", "in November, officials said so.",
        "Acme Corp. said it, etc. and more.", "At 9 a.m. on Monday, Smith et al. found it."]

def test_seed_chunks_are_exact_slices_within_the_token_limit():
    emb = _embedder()
    for path in sorted(SEEDS.glob("*.txt")):
        doc = load(path)
        chunks = chunk_document(doc, emb.count_tokens, max_tokens=128, hard_limit=254)
        assert chunks
        for c in chunks:
            assert doc.text[c.start:c.end] == c.text
            assert c.n_tokens <= 128
            assert emb.count_tokens([c.text])[0] == c.n_tokens


def test_chunks_overlap_by_one_sentence_and_cover_the_document():
    emb = _embedder()
    doc = load(SEEDS / "002_3499e92a9a926461.txt")
    chunks = chunk_document(doc, emb.count_tokens, max_tokens=64, overlap_sentences=1)
    assert len(chunks) > 3
    overlapping = 0
    for prev, nxt in zip(chunks, chunks[1:]):
        last = split_sentences(doc.text, prev.start, prev.end)[-1]
        if nxt.start < prev.end:
            assert nxt.start == last[0]  # the last sentence of one starts the next
            overlapping += 1
        else:  # carrying it would have broken the budget
            first = split_sentences(doc.text, nxt.start, nxt.end)[0]
            assert sum(emb.count_tokens([doc.text[a:b] for a, b in (last, first)])) > 64
    assert overlapping >= len(chunks) // 2
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    non_space = {i for i, ch in enumerate(doc.text) if not ch.isspace()}
    assert non_space <= covered


def test_overlong_sentence_is_split_never_truncated():
    emb = _embedder()
    words = " ".join(f"word{i}" for i in range(3000))
    doc = Document("x.txt", "x", words, "ab" * 32)
    chunks = chunk_document(doc, emb.count_tokens, max_tokens=128, hard_limit=254)
    assert all(c.n_tokens <= 128 for c in chunks)
    joined = " ".join(c.text for c in chunks)
    assert joined == words


def test_chunk_ids_are_deterministic():
    emb = _embedder()
    doc = load(SEEDS / "000_99d9d2801eed8646.txt")
    a = chunk_document(doc, emb.count_tokens, 128)
    b = chunk_document(doc, emb.count_tokens, 128)
    assert a == b
    assert len({c.chunk_id for c in a}) == len(a)
    assert all(c.chunk_id.startswith(doc.sha256[:12]) for c in a)


def test_sentence_end_pattern_finds_what_its_three_alternatives_written_whole_find():
    """rag.chunking writes the sentence-end pattern to begin with the end character, for
    speed; the places it finds are those of the three alternatives as first written."""
    import re

    from rag.chunking import _SENTENCE_END

    whole = re.compile(r"""[.!?]["'”’)\]]*\s+(?=["'“‘(\[]?[A-Z0-9])|\n\s*"""
                       r"""|(?<=[a-z]{3})\.\s+(?=[a-z])""")
    texts = [f.read_text(encoding="utf-8") for f in sorted(SEEDS.glob("*.txt"))] + [
        "He said: “Go.” Then (it ended.) [Yes.] 'No!' \n\n  next. ok. abc. Abc.\tDEF? 9 lives",
        "ab. cd. xyz.\nfoo!  \"Bar\" etc. and so on... Wait?! Ünïcode. émigré. 1. 2.",
        "", ".", "\n", "a.b.c. The end",
    ]
    for text in texts:
        assert [m.span() for m in _SENTENCE_END.finditer(text)] == \
            [m.span() for m in whole.finditer(text)]
