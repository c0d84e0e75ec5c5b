from pathlib import Path

import pytest

from rag.citations import markers, unresolved


def _check_citations(answer):
    assert not unresolved(answer.answer, answer.citations)
    for c in answer.citations:
        text = Path(c.source).read_text(encoding="utf-8")
        assert text[c.start:c.end] == c.text


@pytest.mark.parametrize("question,expected", [
    ("How many North Korean personnel have been deployed to Russia?", "15,000"),
    ("How many North Korean soldiers have been killed in combat?", "600"),
    ("Who did Lee Jae Myung meet in Tokyo?", "Ishiba"),
    ("In what year did the armistice end active fighting in the Korean War?", "1953"),
])
def test_answers_are_right_and_cited_verbatim(answerer, question, expected):
    a = answerer.ask(question)
    assert not a.abstained
    assert expected in a.answer
    assert markers(a.answer) == [1]
    assert any(expected in c.text for c in a.citations)
    _check_citations(a)


def test_unrelated_question_abstains(answerer):
    a = answerer.ask("What is the boiling point of liquid nitrogen in Kelvin?")
    assert a.abstained
    assert a.citations == ()
    assert "do not answer" in a.answer


def test_answer_records_timings_and_checks(answerer):
    a = answerer.ask("How many portraits of soldiers killed in battle were displayed?")
    assert set(a.timings) == {"retrieve_s", "generate_s", "total_s"}
    assert a.timings["total_s"] >= a.timings["retrieve_s"]
    if not a.abstained:
        assert a.method in ("generated", "extractive")
        assert "checks" in a.verification
        _check_citations(a)


def test_models_load_once_per_process(answerer):
    answerer.ask("How many North Korean personnel have been deployed to Russia?")
    llm = answerer.llm
    answerer.ask("Who did Lee Jae Myung meet in Tokyo?")
    assert answerer.llm is llm
