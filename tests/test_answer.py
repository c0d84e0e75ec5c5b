"""The ask job (rag.answer.Answerer) over the seed articles, with the real reader."""

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
    ("In what year did the armistice end active fighting in the Korean War?", "1953"),
    ("Who oversaw the test of the new anti-air missiles?", "Kim Jong Un"),
    ("Which family dynasty has ruled North Korea for decades?", "Kim dynasty"),
])
def test_answers_are_right_and_cited_verbatim(answerer, question, expected):
    a = answerer.ask(question)
    assert not a.abstained
    assert expected in a.answer
    assert markers(a.answer) == [1]
    assert expected in a.citations[0].text
    _check_citations(a)


# Questions people asked over the seeds, none of them written for: each is answered right or
# abstained on, never answered wrong; the answer it should hold (None: the articles give none).
UNSEEN = [
    ("Who is the South Korean president?", "lee jae myung"),
    ("What did Russia give North Korea?", "missiles"),
    ("Which region will the North Korean construction workers be sent to?", "kursk"),
    ("Who awarded the hero titles?", "kim jong un"),
    ("Which agency estimates the number of personnel sent to Russia?", "intelligence"),
    ("Who leads Russia?", "putin"),
    ("Where did the missile test take place?", "undisclosed location"),
    ("Why did Kim Jong Un test the missiles?", None),
]


def test_unseen_questions_are_answered_right_or_abstained(answerer):
    right = 0
    for question, expected in UNSEEN:
        a = answerer.ask(question)
        if a.abstained:
            continue
        assert expected is not None and expected in a.answer.lower(), (question, a.answer)
        _check_citations(a)
        right += 1
    assert right >= 2  # not by abstaining on everything


def test_a_why_question_is_answered_by_the_sentence_that_gives_the_reason(answerer):
    a = answerer.ask("why is north korea sending troops to russia")
    assert not a.abstained and a.method == "extractive"
    assert "why question" in a.verification.why_quoted
    assert a.answer == f"{a.citations[0].text} [1]"
    assert a.verification.span in a.citations[0].text
    _check_citations(a)


def test_ask_never_loads_the_gguf_model(seed_settings):
    from rag.answer import Answerer

    a = Answerer(seed_settings)
    try:
        for q in ("How many North Korean personnel have been deployed to Russia?",
                  "Summarize the relationship between North Korea and Russia.",
                  "What is the boiling point of liquid nitrogen in Kelvin?"):
            a.ask(q)
        assert a._llm is None
    finally:
        a.close()


def test_yes_no_questions_quote_the_passage(answerer):
    a = answerer.ask("Was a peace treaty ever signed to end the Korean War?")
    assert not a.abstained and a.method == "extractive"
    assert "peace treaty" in a.answer
    assert "yes/no" in a.verification.why_quoted
    _check_citations(a)


def test_an_unknown_answer_style_is_refused(seed_settings):
    from rag.answer import Answerer
    from rag.errors import RagError

    with pytest.raises(RagError, match="answer style 'long'"):
        Answerer(seed_settings.with_(answer_style="long"))


def test_a_page_pasted_as_a_question_is_read_to_its_first_words(answerer):
    # chat and eval ask through Answerer.ask, not the CLI: the cut is made there too
    from rag.display import MAX_QUESTION_CHARS

    question = "How many North Korean personnel have been deployed to Russia? " + \
        "and more words " * 5_000
    a = answerer.ask(question)
    assert len(a.question) <= MAX_QUESTION_CHARS
    assert question.startswith(a.question)
    assert question[len(a.question)] == " "  # cut at a word
