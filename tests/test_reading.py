
import pytest

from rag.citations import markers
from tests.test_answer import _check_citations


def test_the_short_answer_is_the_readers_span_inside_the_cited_sentence(answerer):
    a = answerer.ask("How many North Korean personnel have been deployed to Russia?")
    assert a.method == "reader"
    body = a.answer.rsplit(" [", 1)[0]
    assert body == a.verification.span
    assert body in a.citations[0].text and len(body.split()) <= 6
    assert a.verification.answerable_chance >= a.verification.answerable_threshold
    assert a.verification.sentence_margin >= a.verification.support_margin
    assert a.verification.supported_by_sentence is True


def test_reader_abstains_on_an_unrelated_question_and_says_why(answerer):
    a = answerer.ask("What is the boiling point of liquid nitrogen in Kelvin?")
    assert a.abstained and a.method == "abstained"
    assert a.citations == ()
    assert a.answer.startswith("The indexed documents do not answer this question")
    assert a.verification.reason in a.answer
    assert a.verification.answerable_chance < a.verification.answerable_threshold


def test_reader_timings_add_up(answerer):
    a = answerer.ask("How many portraits of soldiers killed in battle were displayed?")
    t = a.timings
    assert set(t) == {"retrieve_s", "generate_s", "total_s"}
    assert 0 < t["retrieve_s"] and 0 < t["generate_s"]
    assert abs(t["retrieve_s"] + t["generate_s"] - t["total_s"]) < 2e-4


def test_the_reader_loads_once_per_process(answerer):
    answerer.ask("How many North Korean personnel have been deployed to Russia?")
    reader = answerer.reading.reader
    answerer.ask("Who did Lee Jae Myung meet in Tokyo?")
    assert answerer.reading.reader is reader


def test_quote_style_prints_the_sentence_holding_the_span(seed_settings):
    from rag.answer import Answerer

    a = Answerer(seed_settings.with_(answer_style="quote"))
    try:
        ans = a.ask("How many North Korean personnel have been deployed to Russia?")
        assert ans.method == "reader"
        assert ans.answer == f"{ans.citations[0].text} [1]"
        assert ans.verification.span in ans.citations[0].text
    finally:
        a.close()


def test_the_margins_decide_between_span_quote_and_abstention(seed_settings):
    from dataclasses import replace

    from rag.answer import Answerer
    from rag.reading import Calibration, ReaderPath

    question = "How many North Korean personnel have been deployed to Russia?"
    base = Calibration.load()
    assert base.answerability is not None
    strict_support = Answerer(seed_settings)
    strict_answer = Answerer(seed_settings)
    margin_only = Answerer(seed_settings)
    strict_support._reading = ReaderPath(
        strict_support.settings, strict_support.embedder, replace(base, support_margin=1e9))
    strict_answer._reading = ReaderPath(
        strict_answer.settings, strict_answer.embedder,
        replace(base, answerability=replace(base.answerability, threshold=1.01)))
    # without an answerability model the reader's margin alone decides
    margin_only._reading = ReaderPath(margin_only.settings, margin_only.embedder,
                                      Calibration(1e9, base.support_margin))
    try:
        quoted = strict_support.ask(question)
        assert quoted.method == "extractive" and not quoted.abstained
        assert quoted.answer == f"{quoted.citations[0].text} [1]"
        assert quoted.verification.supported_by_sentence is False
        assert "does not support" in quoted.verification.why_quoted
        refused = strict_answer.ask(question)
        assert refused.abstained and refused.citations == ()
        assert refused.verification.answerable_chance <= 1.0
        by_margin = margin_only.ask(question)
        assert by_margin.abstained and by_margin.verification.answer_margin == 1e9
        assert by_margin.verification.answerable_chance is None
    finally:
        margin_only.close()
        strict_support.close()
        strict_answer.close()


@pytest.mark.parametrize("question,topic,conflicts_first", [
    ("Summarize the relationship between North Korea and Russia.",
     "the relationship between North Korea and Russia", False),
    ("summarise it for me", "it", False),
    ("Tell me about the missile test", "the missile test", False),
    ("Give me an overview of the deployment", "the deployment", False),
    ("What do the sources disagree on?", None, True),
    ("Where do the articles differ about casualties?", "casualties", True),
    ("please summarize the documents", None, False),
    ("Summarize the agreement between Russia and North Korea",
     "the agreement between Russia and North Korea", False),
    ("Do the two accounts differ on the number of troops?", "the number of troops", True),
    ("What do the reports disagree on about the casualties?", "the casualties", True),
    ("Explain the troop deployment", "the troop deployment", False),
    ("describe to me the missile test", "the missile test", False),
])
def test_instructions_are_recognised_with_their_topic(question, topic, conflicts_first):
    from rag.reading import instruction

    got = instruction(question)
    assert got is not None
    assert got.topic == topic
    assert got.conflicts_first == conflicts_first


@pytest.mark.parametrize("question", [
    "What did Russia give North Korea?",
    "Who summarized the report?",
    "Why did Kim Jong Un tell the troops to return?",
    "who is the south korean president",
    "Do you agree with the decision?",
    "Does the article say when the test took place?",
    "How did the report describe the troops?",
    "explained",
])
def test_questions_are_not_instructions(question):
    from rag.reading import instruction

    assert instruction(question) is None


def test_an_instruction_is_answered_by_a_cited_briefing(answerer):
    a = answerer.ask("Summarize the relationship between North Korea and Russia.")
    assert not a.abstained and a.method == "briefing"
    assert a.verification.topic == "the relationship between North Korea and Russia"
    lines = a.answer.splitlines()
    assert 1 <= len(lines) <= 5 + 2
    assert all(line.startswith("- ") for line in lines)
    assert sorted(markers(a.answer)) == [c.n for c in a.citations]
    _check_citations(a)


def test_asked_where_the_sources_disagree_the_conflicts_come_first(answerer):
    a = answerer.ask("What do the sources disagree on?")
    assert a.method == "briefing" and a.verification.conflicts >= 1
    first = a.answer.splitlines()[0]
    assert len(markers(first)) >= 2  # a conflict cites both sides
    _check_citations(a)


def test_chat_answers_with_the_reader_and_briefs_on_what_it_was_about(seed_settings):
    """`rag chat` on the default path: a question answered by the reader's span, cited; then
    "summarize that" is a briefing on what the conversation was about."""
    import io

    from rag.chat import Session, piped_reader

    out = io.StringIO()
    s = Session(seed_settings, out=out, err=io.StringIO())
    try:
        s.run(piped_reader(io.StringIO(
            "How many North Korean personnel have been deployed to Russia?\nsummarize that\n")))
    finally:
        s.close()
    first, second = (t.answer for t in s.conversation.turns)
    assert first.method in ("reader", "extractive") and "15,000" in first.answer
    assert markers(first.answer) == [1]
    assert second.method == "briefing" and second.verification.topic
    assert "Russia" in second.verification.topic or "North" in second.verification.topic
    assert out.getvalue().count("Sources:") == 2


def test_a_calibration_for_other_features_is_refused_by_name(tmp_path):
    import json

    from rag.errors import RagError
    from rag.reading import CALIBRATION, Calibration

    data = json.loads(CALIBRATION.read_text(encoding="utf-8"))
    model = data["answerability"]
    assert Calibration.load().answerability.threshold == model["threshold"]
    data["answerability"] = {**model, "features": model["features"][::-1]}
    bad = tmp_path / "reader.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RagError, match="reader.json: the reader's calibration is unreadable"):
        Calibration.load(bad)


def test_the_answerable_chance_rises_with_the_readers_margin():
    from rag.reading import FEATURES, Calibration

    model = Calibration.load().answerability
    base = dict(zip(FEATURES, model.mean))
    low, high = (model.chance({**base, "margin": m, "sentence_margin": m}) for m in (-8.0, 8.0))
    assert 0.0 < low < high < 1.0


def test_a_follow_up_about_who_decided_is_answered_from_the_turn_before(seed_settings):
    """(chat) "Who decided to send them there?" after the Kursk question: the answer names
    Kim, or rag abstains; never another name."""
    import io

    from rag.chat import Session, piped_reader

    s = Session(seed_settings, out=io.StringIO(), err=io.StringIO())
    try:
        s.run(piped_reader(io.StringIO(
            "Which region will the North Korean construction workers be sent to?\n"
            "Who decided to send them there?\n")))
    finally:
        s.close()
    first, second = (t.answer for t in s.conversation.turns)
    assert "Kursk" in first.answer
    assert second.abstained or "Kim" in second.answer
