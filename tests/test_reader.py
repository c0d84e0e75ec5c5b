import hashlib
import json

import numpy as np
import pytest

from rag.config import Settings
from rag.reader import CLS, SEP, WEIGHTS


@pytest.fixture(scope="module")
def base():
    from rag.reader import READER_BASE, load_base
    from rag.registry import resolve_embedding

    return load_base(resolve_embedding(READER_BASE, Settings()).path)


@pytest.fixture(scope="module")
def reader(base):
    from rag.reader import Reader

    return Reader(base)


def test_the_committed_weights_are_the_ones_recorded():
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    recorded = WEIGHTS.with_name("reader.sha256").read_text().split()[0]
    calibration = json.loads(WEIGHTS.with_name("reader.json").read_text())
    assert digest == recorded == calibration["weights_sha256"]
    assert WEIGHTS.stat().st_size < 4_000_000  # an adapter, not a model


def test_the_span_answers_and_lies_in_the_passage(reader):
    passage = ("The bridge was closed on Tuesday after inspectors found cracks in two of its "
               "steel supports. The city engineer, Maria Lopez, said repairs would take six "
               "weeks and cost about 2 million dollars.")
    spans = reader.read("How long will the repairs take?", [passage])[0]
    best = spans[0]
    assert passage[best.start:best.end] == "six weeks"
    who = reader.read("Who is the city engineer?", [passage])[0][0]
    assert passage[who.start:who.end] == "Maria Lopez"
    # best first, and none overlapping a better one
    assert all(a.margin >= b.margin for a, b in zip(spans, spans[1:]))
    for i, a in enumerate(spans):
        assert all(a.end <= b.start or b.end <= a.start for b in spans[i + 1:])


def test_a_passage_without_the_answer_scores_below_one_with_it(reader):
    question = "How long will the repairs take?"
    holds = "The city engineer said repairs to the bridge would take six weeks."
    lacks = "The city council met on Monday to discuss the budget for new parks."
    with_it, without = (max(s.margin for s in spans)
                        for spans in reader.read(question, [holds, lacks]))
    assert with_it > without


def test_a_long_passage_is_read_in_windows(reader):
    filler = " ".join(f"Paragraph {i} describes the weather, which was mild and dry." for i in
                      range(80))
    passage = filler + " The museum reopened in March 2021 after a long renovation."
    assert len(reader.tokenizer.encode(passage).ids) > 600
    best = reader.read("When did the museum reopen?", [passage])[0][0]
    assert "March 2021" in passage[best.start:best.end]


def test_no_passages_no_spans(reader):
    assert reader.read("Anything?", []) == []
    assert reader.read("Anything?", [""]) == [[]]


def test_merged_weights_compute_what_the_training_model_computed(base, reader):
    """The adapters merged into the encoder at load give the logits the training model gives
    with the adapters apart (bench/train_reader.py trains the latter)."""
    import torch

    from rag.reader import ReaderModel, load_adapter

    saved = load_adapter(WEIGHTS)
    model = ReaderModel(base, rank=saved["lora.0.0.a"].shape[0])
    with torch.no_grad():
        for k, (a, b) in enumerate(model.lora):
            i, j = divmod(k, 4)
            a.copy_(saved[f"lora.{i}.{j}.a"].float())
            b.copy_(saved[f"lora.{i}.{j}.b"].float())
            model.biases[k].copy_(saved[f"bias.{i}.{j}"])
        for k, n in enumerate(model.norms):
            n.copy_(saved[f"norm.{k // 4}.{k % 4}"])
        model.emb_w.copy_(saved["emb_norm.weight"])
        model.emb_b.copy_(saved["emb_norm.bias"])
        model.head.weight.copy_(saved["head.weight"])
        model.head.bias.copy_(saved["head.bias"])
        q = reader.tokenizer.encode("Who won the match?", add_special_tokens=False).ids
        p = reader.tokenizer.encode("The home side won the match 3-1 on Sunday.",
                                    add_special_tokens=False).ids
        ids = torch.tensor([[CLS, *q, SEP, *p, SEP]])
        start, end = model(ids, torch.ones_like(ids, dtype=torch.bool))
    adapter = reader.adapters[0]
    logits = adapter.logits(reader._states([ids[0].tolist()], adapter.engine)[0])
    np.testing.assert_allclose(logits[:, 0], start[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(logits[:, 1], end[0].numpy(), atol=1e-4)


def test_an_ensemble_reads_with_the_mean_of_its_adapters_logits(base):
    from rag.reader import Reader

    passage = "The city engineer said repairs to the bridge would take six weeks."
    question = "How long will the repairs take?"
    one = Reader(base, WEIGHTS).read(question, [passage])[0]
    pair = Reader(base, (WEIGHTS, WEIGHTS))
    same = pair.read(question, [passage])[0]
    assert [(s.start, s.end) for s in same] == [(s.start, s.end) for s in one]
    np.testing.assert_allclose([s.score for s in same], [s.score for s in one], rtol=1e-5)
    # the second adapter's start logits 2 higher everywhere: the mean's are 1 higher, so every
    # score and "no answer" score rises by 1 and every margin stays
    pair.adapters[1].head_b = pair.adapters[1].head_b + np.array([2.0, 0.0], dtype=np.float32)
    moved = pair.read(question, [passage])[0]
    assert [(s.start, s.end) for s in moved] == [(s.start, s.end) for s in one]
    np.testing.assert_allclose([s.score for s in moved], [s.score + 1 for s in one], rtol=1e-4)
    np.testing.assert_allclose([s.null for s in moved], [s.null + 1 for s in one], rtol=1e-4)


def test_an_ensembles_checksum_names_its_adapters_in_order(tmp_path):
    from rag.reader import checksum

    other = tmp_path / "other.safetensors"
    other.write_bytes(WEIGHTS.read_bytes() + b" ")
    assert checksum((WEIGHTS,)) == checksum(WEIGHTS) == hashlib.sha256(
        WEIGHTS.read_bytes()).hexdigest()
    assert len({checksum(WEIGHTS), checksum((WEIGHTS, other)), checksum((other, WEIGHTS))}) == 3


def test_missing_weights_are_one_clear_error(base, tmp_path):
    from rag.errors import RagError
    from rag.reader import Reader

    with pytest.raises(RagError, match="make train"):
        Reader(base, tmp_path / "nothing.safetensors")


def test_answers_are_found_as_whole_words_in_training_passages():
    from bench.train_reader import _occurrences

    text = "Gold medals, not golden ones: gold was what Gold Coast runners wanted."
    spans = _occurrences(text, ["gold"])
    assert [text[a:b] for a, b in spans] == ["Gold", "gold", "Gold"]
    # the place the annotator marked comes first, then the others
    assert _occurrences(text, ["gold"], [30])[0] == (30, 34)


def test_a_training_window_marks_where_the_answer_stands(base):
    import random

    from bench.train_reader import _occurrences, _window

    tok = base.tokenizer
    q_ids = tok.encode("When did the museum reopen?", add_special_tokens=False).ids
    text = " ".join(f"Line {i} is about the weather." for i in range(25)) + \
        " The museum reopened in March 2021. It was in March 2021 that crowds came back."
    row, golds = _window(tok, q_ids, text, _occurrences(text, ["March 2021"]), 100,
                         random.Random(0))
    assert row[0] == CLS and row[len(q_ids) + 1] == SEP and len(row) == len(q_ids) + 103
    assert golds and all(tok.decode(row[s:e + 1]) == "march 2021" for s, e in golds)
    # a window of a passage without the answer marks nothing
    _, none = _window(tok, q_ids, text, _occurrences(text, ["April"]), 100, random.Random(0))
    assert none == []


def test_shared_normalisation_rewards_the_answer_over_every_window_of_the_group():
    import torch

    from bench.train_reader import shared_loss

    # two windows of one group, five tokens each after a two-token question part
    start = torch.zeros(2, 8)
    end = torch.zeros(2, 8)
    golds = [[(4, 5)], []]
    before = shared_loss(start, end, [[0, 1]], golds, [2, 2], [5, 5])
    assert before.item() == pytest.approx(np.log(10))  # ten places, all alike
    start[0, 4] = end[0, 5] = 3.0  # the answer's place scores higher
    assert shared_loss(start, end, [[0, 1]], golds, [2, 2], [5, 5]) < before
    start[1, 3] = end[1, 3] = 6.0  # a place in the window without it scores higher still
    assert shared_loss(start, end, [[0, 1]], golds, [2, 2], [5, 5]) > before


def test_with_no_answer_in_the_scale_a_group_without_one_is_taught_its_no_answer_places():
    import torch

    from bench.train_reader import shared_loss

    start = torch.zeros(2, 8)
    end = torch.zeros(2, 8)
    unanswered = [[], []]
    before = shared_loss(start, end, [[0, 1]], unanswered, [2, 2], [5, 5], null=True)
    assert before.item() == pytest.approx(np.log(12 / 2))  # two [CLS] places of twelve
    start[:, 0] = end[:, 0] = 3.0  # "no answer" scores higher in both windows
    assert shared_loss(start, end, [[0, 1]], unanswered, [2, 2], [5, 5], null=True) < before
    # a group with an answer: a window's [CLS] above the answer costs more than without it
    golds = [[(4, 5)], []]
    start, end = torch.zeros(2, 8), torch.zeros(2, 8)
    start[1, 0] = end[1, 0] = 4.0
    with_null = shared_loss(start, end, [[0, 1]], golds, [2, 2], [5, 5], null=True)
    assert with_null > shared_loss(start, end, [[0, 1]], golds, [2, 2], [5, 5])


def test_an_unanswerable_group_holds_none_of_the_answers(base):
    import random

    from bench.train_reader import grouped_examples

    tok = base.tokenizer
    q = {"index": 0, "question": "When did the museum reopen?", "answers": ["March 2021"],
         "starts": [23], "doc": "d"}
    texts = {"d": "The museum reopened in March 2021."}
    retrieved = {0: ["It reopened in March 2021 after a fire.", "The park opened in May.",
                     "The weather was cold.", "March 2021 saw crowds."]}
    answerable = grouped_examples(tok, [q], texts, retrieved, 64, 2, random.Random(0))
    assert any(golds for _, golds in answerable[0])
    unanswerable = grouped_examples(tok, [q], texts, retrieved, 64, 2, random.Random(0), 1.0)
    assert len(unanswerable[0]) == 2 and not any(golds for _, golds in unanswerable[0])
    assert [tok.decode(row[row.index(SEP) + 1:-1]) for row, _ in unanswerable[0]] == \
        ["the park opened in may.", "the weather was cold."]
