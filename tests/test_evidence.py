import re

import pytest

from rag import evidence as ev


@pytest.mark.parametrize("question,kind", [
    ("How many troops were sent?", "number"),
    ("When did the armistice end the fighting?", "time"),
    ("In what year was the armistice signed?", "time"),
    ("Who met Lee in Tokyo?", "person"),
    ("Where is Kursk?", "other"),
])
def test_answer_kind(question, kind):
    assert ev.answer_kind(question) == kind


def test_fits_kind():
    assert ev.fits_kind("about 15,000", "number")
    assert ev.fits_kind("thousands", "number")
    assert not ev.fits_kind("the missiles", "number")
    assert ev.fits_kind("on Sunday", "time")
    assert not ev.fits_kind("in Tokyo", "time")
    assert ev.fits_kind("Shigeru Ishiba", "person")


def test_adds_information():
    assert not ev.adds_information("the missiles", "What was the name of the missiles?")
    assert ev.adds_information("Hwasong", "What was the name of the missiles?")


def test_span_grammar_compiles_and_spells_every_word():
    from llama_cpp import LlamaGrammar

    sentences = ['He said "no" to the 3\\4 plan.', "Lee met Ishiba\nin Tokyo."]
    g = ev.span_grammar(sentences)
    LlamaGrammar.from_string(g, verbose=False)
    rules = dict(line.split(" ::= ", 1) for line in g.strip().splitlines())
    assert len([r for r in rules if re.match(r"s\d+w\d+$", r)]) == 7 + 5
    assert rules["s1w2"] == '"Ishiba" ("\\n" s1w3)?'


def test_locate_finds_the_sentence_holding_a_span():
    sents = [ev.Sentence("a", "c", 0, 5, t, 0, 0, 0) for t in ("one two", "three four")]
    assert ev.locate("four", sents) == 1
    assert ev.locate("two three", sents) is None
