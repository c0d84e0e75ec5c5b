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


def test_a_question_about_what_no_document_mentions_abstains_and_says_why(answerer):
    a = answerer.ask("How many North Korean soldiers have been wounded in the war in Ukraine?")
    assert a.abstained and a.citations == ()
    assert a.verification["unseen_words"] == ["wounded"]
    assert "“wounded”" in a.answer


def test_a_word_close_to_what_the_documents_say_does_not_abstain(answerer):
    # no passage says "dead", but they speak of soldiers who died
    a = answerer.ask("How many portraits of the dead soldiers were displayed at the ceremony?")
    assert not a.abstained
    assert "101" in a.answer


def test_yes_no_questions_quote_the_passage(answerer):
    a = answerer.ask("Was a peace treaty ever signed to end the Korean War?")
    assert not a.abstained and a.method == "extractive"
    assert "peace treaty" in a.answer
    _check_citations(a)


def test_store_mentions_reads_words_as_the_index_does(seed_settings):
    from rag.store import open_store

    store, _ = open_store(seed_settings)
    assert store.mentions("Pyongyang") and store.mentions("missile")  # stemmed: "missiles"
    assert not store.mentions("wounded")
    assert not store.mentions('"') and not store.mentions("")
    store.close()


@pytest.mark.parametrize("question,needle", [
    # "Beijing" and "relations" are rare among the candidates; "North Korea" is everywhere
    ("How are North Korea's relations with Beijing described?", "strained"),
    ("Which country did South Korea and Japan pledge to strengthen their trilateral "
     "partnership with?", "United States"),
])
def test_rare_question_words_decide_the_evidence_sentence(answerer, question, needle):
    from rag import evidence as ev

    sentences = ev.rank_sentences(question, answerer.retrieve(question), answerer.embedder)
    assert needle in sentences[0].text


def test_irregular_verb_forms_count_as_mentioned(answerer):
    # the documents say "held talks", never "hold"
    a = answerer.ask("In which city did Lee Jae Myung hold talks with the Japanese prime "
                     "minister?")
    assert not a.abstained and "Tokyo" in a.answer


def test_a_question_about_what_the_documents_say_was_not_disclosed_abstains_citing_it(
        answerer):
    a = answerer.ask("From which location were the new anti-air missiles launched?")
    assert a.abstained
    assert "not made known" in a.answer and markers(a.answer) == [1]
    assert len(a.citations) == 1
    assert "undisclosed location" in a.citations[0].text or \
        "did not disclose" in a.citations[0].text
    _check_citations(a)


def test_a_distance_question_needs_a_passage_giving_a_distance(answerer):
    # the documents speak of "intermediate-range" missiles, never of how far any flies
    a = answerer.ask("What is the range of the new anti-air missiles?")
    assert a.abstained and a.citations == ()
    assert "distance" in a.answer


def test_a_word_that_only_qualifies_a_mentioned_one_does_not_abstain(answerer):
    a = answerer.ask("Which family dynasty has ruled North Korea for decades?")
    assert not a.abstained
    assert "Kim" in a.answer


def test_a_long_evidence_sentence_is_quoted_by_its_answering_clauses(answerer):
    # the evidence sentence runs 45 words; the quoted part is the clause naming who oversaw
    a = answerer.ask("Who oversaw the test of the new anti-air missiles?")
    assert not a.abstained
    assert "Kim Jong Un" in a.answer
    body = a.answer.rsplit(" [", 1)[0]
    assert len(body.split()) <= 25
    assert body in a.citations[0].text  # quoted exactly, a part of the cited sentence
    _check_citations(a)


def test_when_questions_need_a_time_not_a_bare_figure(answerer):
    # "Kim recently held a ceremony ... the 101 soldiers" ranks first but names no time
    a = answerer.ask("When did Kim preside over the ceremony honoring the returning troops?")
    assert not a.abstained
    assert "last week" in a.answer.lower()


def test_short_style_answers_with_a_run_of_the_evidence(seed_settings):
    from rag.answer import Answerer

    a = Answerer(seed_settings.with_(answer_style="short", reader=False))
    try:
        for question, expected in [
                ("How many North Korean soldiers have been killed in combat?", "600"),
                ("Who did Lee Jae Myung meet in Tokyo?", "Ishiba")]:
            ans = a.ask(question)
            assert not ans.abstained and ans.method in ("generated", "chosen")
            body = ans.answer.rsplit(" [", 1)[0]
            assert expected in body and len(body.split()) <= 6
            assert body in ans.citations[0].text
            _check_citations(ans)
    finally:
        a.close()


def test_an_unknown_answer_style_is_refused(seed_settings):
    from rag.answer import Answerer
    from rag.errors import RagError

    with pytest.raises(RagError, match="answer style 'long'"):
        Answerer(seed_settings.with_(answer_style="long"))


@pytest.mark.parametrize("question, expected", [
    # the model says "hero"; the sentence praised them as "great patriots"
    ("What were the soldiers praised as at the ceremony?", "great patriots"),
    # the best-scoring sentence names Kim but has nothing where "ties with" points
    ("Which country has Kim Jong Un cultivated closer military ties with?", "Russia"),
])
def test_a_hanging_preposition_points_at_the_answer(answerer, question, expected):
    a = answerer.ask(question)
    assert not a.abstained
    assert a.verification["answer_slot"] == expected
    assert expected in a.answer and expected in a.citations[0].text
    _check_citations(a)


def test_short_style_fills_the_gap_the_question_closes(seed_settings):
    from rag.answer import Answerer

    # seeds q38: the model's likeliest run was "perceived threats"; the sentence says "grow
    # its nuclear weapons stockpile as a deterrent"
    a = Answerer(seed_settings.with_(answer_style="short", reader=False))
    try:
        ans = a.ask("What has Kim said North Korea will accelerate efforts to grow as a "
                    "deterrent?")
        assert not ans.abstained
        assert ans.verification["answer_gap"] == "nuclear weapons stockpile"
        assert ans.answer == "nuclear weapons stockpile [1]"
        _check_citations(ans)
    finally:
        a.close()


def test_a_name_no_sentence_gives_is_not_answered(answerer):
    # the seed articles call them "new anti-air missiles" and never name them
    a = answerer.ask("What is the name or designation of the new anti-air missiles North Korea "
                     "tested?")
    assert a.abstained
    assert "gives the missiles’ name" in a.answer


def test_short_style_picks_the_qualifier_of_what_a_kind_question_asks_about(seed_settings):
    from rag.answer import Answerer

    a = Answerer(seed_settings.with_(answer_style="short", reader=False))
    try:
        ans = a.ask("What kind of missiles did North Korea test?")
        assert "anti-air" in ans.answer
        _check_citations(ans)
    finally:
        a.close()


@pytest.mark.parametrize("question, expected", [
    # the likeliest run is "United States", far from "President" in the sentence
    ("Who is the president of South Korea?", "myung"),
    # "Seoul" is likelier; "besides" asks for the other item of the workers' list
    ("Besides construction workers, who else has Kim agreed to send to Russia's Kursk region?",
     "deminers"),
    # "confrontational" alone is likelier; the source quotes the whole term
    ("How does Pyongyang describe the actions of Washington and Seoul?",
     "hostile and confrontational"),
])
def test_short_style_answers_beside_what_is_asked(seed_settings, question, expected):
    from rag.answer import Answerer

    a = Answerer(seed_settings.with_(answer_style="short", reader=False))
    try:
        ans = a.ask(question)
        assert not ans.abstained and ans.method in ("generated", "chosen")
        body = ans.answer.rsplit(" [", 1)[0]
        assert expected in body.lower() and len(body.split()) <= 6
        assert body in ans.citations[0].text
        _check_citations(ans)
    finally:
        a.close()


def test_a_page_pasted_as_a_question_is_read_to_its_first_words(answerer):
    # chat and eval ask through Answerer.ask, not the CLI: the cut is made there too
    from rag.display import MAX_QUESTION_CHARS

    question = "How many North Korean personnel have been deployed to Russia? " + \
        "and more words " * 5_000
    a = answerer.ask(question)
    assert len(a.question) <= MAX_QUESTION_CHARS
    assert question.startswith(a.question)
    assert question[len(a.question)] == " "  # cut at a word
