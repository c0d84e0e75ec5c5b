"""The seed briefing against the key facts and disagreements written in seed_facts.json, and the
briefing's bounds (map budget, pool size), determinism, JSON shape and command line."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag import brief
from rag.citations import strip_markers
from rag.cli import app

FACTS = json.loads((Path(__file__).parent / "seed_facts.json").read_text())

# What each known disagreement's sides say, as the conflict text must name it (by the order of
# "conflicts" in seed_facts.json).
SIDE_WORDS = [
    ("departed", "scheduled"),
    ("roughly 600", "Over 600"),
    ("since last fall", "Since the invasion began"),
    ("as fact", "only as a possibility"),
]


@pytest.fixture(scope="module")
def seed_brief(seed_settings):
    """The default briefing: 12 points, 300 words."""
    return brief.build(seed_settings)


@pytest.fixture(scope="module")
def long_brief(seed_settings):
    return brief.build(seed_settings, max_points=16, max_words=400)


def _prefix(source: str) -> str:
    return Path(source).name[:3]


def _norm(text: str) -> str:
    return " ".join(text.replace("’", "'").split())


def _covered(fact: dict, b) -> bool:
    """A key fact is covered by a point's text; a fact whose figure the sources dispute may be
    covered by the conflict that shows both figures instead."""
    texts = [p.text for p in b.points] + [c.text for c in b.conflicts]
    return any(m in t for m in fact["must_contain_any"] for t in texts)


def test_every_key_fact_is_covered(long_brief):
    missing = [f["fact"] for f in FACTS["key_facts"] if not _covered(f, long_brief)]
    assert not missing, missing


def test_default_briefing_covers_most_key_facts_in_its_points(seed_brief):
    words = sum(len(strip_markers(p.text).split()) for p in seed_brief.points)
    assert len(seed_brief.points) <= 12 and words <= 300 + 60  # the last point may run over
    in_points = [f for f in FACTS["key_facts"]
                 if any(m in p.text for m in f["must_contain_any"] for p in seed_brief.points)]
    assert len(in_points) >= 10, [f["fact"] for f in FACTS["key_facts"] if f not in in_points]


def test_every_point_is_cited_verbatim(seed_brief, long_brief):
    assert seed_brief.points
    for p in seed_brief.points + seed_brief.conflicts + long_brief.points:
        assert p.citations
        for c in p.citations:
            assert Path(c.source).read_text(encoding="utf-8")[c.start:c.end] == c.text
        assert {int(n) for n in re.findall(r"\[(\d+)\]", p.text)} == {c.n for c in p.citations}


def test_every_document_contributes(seed_brief):
    cited = {_prefix(c.source) for p in seed_brief.points for c in p.citations}
    assert cited == {"000", "002", "003"}


def test_merged_points_count_their_sources(seed_brief):
    multi = [p for p in seed_brief.points if p.n_sources > 1]
    assert multi
    for p in seed_brief.points:
        assert len({c.source for c in p.citations}) == p.n_sources


@pytest.mark.parametrize("k", range(len(FACTS["conflicts"])))
def test_known_disagreement_is_a_conflict(seed_brief, k):
    """Each known disagreement is one conflict that cites every side with its own words, and
    whose text says what each side says."""
    known = FACTS["conflicts"][k]
    found = []
    for c in seed_brief.conflicts:
        quoted = {_prefix(x.source) for x in c.citations
                  for side in known["sides"]
                  if side["source"] == _prefix(x.source) and _norm(side["quote"]) in _norm(x.text)}
        if quoted == {side["source"] for side in known["sides"]}:
            found.append(c)
    assert found, (known["about"], [c.text for c in seed_brief.conflicts])
    conflict = found[0]
    assert len({x.source for x in conflict.citations}) >= 2
    for words in SIDE_WORDS[k]:
        assert words in conflict.text, (words, conflict.text)


def test_lee_travel_disagreement_cites_both_articles(seed_brief):
    lee = [c for c in seed_brief.conflicts if "Washington" in c.text and "Lee" in c.text]
    assert lee, [c.text for c in seed_brief.conflicts]
    assert {_prefix(c.source) for c in lee[0].citations} == {"000", "002"}
    assert lee[0].aspect == "status"


def test_no_conflict_beyond_the_known_ones(seed_brief):
    """No false alarms: every conflict found is one of the disagreements written down."""
    quotes = [_norm(side["quote"]) for known in FACTS["conflicts"] for side in known["sides"]]
    for c in seed_brief.conflicts:
        assert all(any(q in _norm(x.text) for q in quotes) for x in c.citations), c.text
    assert len(seed_brief.conflicts) <= len(FACTS["conflicts"])


def test_a_point_does_not_cite_a_source_that_disputes_it(seed_brief):
    """The November statement (000, 002) and last year's reports (003) are never one point."""
    for p in seed_brief.points:
        texts = " ".join(x.text for x in p.citations)
        assert not ("Reports last year" in texts and "previous" in texts), p.text


def test_briefing_is_deterministic(seed_settings, seed_brief):
    again = brief.build(seed_settings)
    assert brief.as_json(again) == brief.as_json(seed_brief)


def test_json_shape(seed_brief):
    data = brief.as_json(seed_brief)
    assert set(data) >= {"topic", "points", "conflicts", "sources"}
    for p in data["points"]:
        assert p["method"] == "extractive" and p["verified"] is True
        assert p["n_sources"] == len({c["source"] for c in p["citations"]})
    for p in data["points"] + data["conflicts"]:
        assert isinstance(p["text"], str)
        for c in p["citations"]:
            assert set(c) >= {"n", "source", "chunk_id", "text"}
    for c in data["conflicts"]:
        assert len(c["sides"]) >= 2
        assert sorted(n for s in c["sides"] for n in s["citations"]) == \
            [x["n"] for x in c["citations"]]
    listed = {s["source"] for s in data["sources"]}
    assert {c["source"] for p in data["points"] for c in p["citations"]} <= listed
    assert len(listed) == 3


def test_topic_briefing_stays_on_topic(seed_settings):
    b = brief.build(seed_settings, topic="North Korean troops in Russia", max_points=4)
    assert b.topic == "North Korean troops in Russia"
    assert any("15,000" in p.text or "600" in p.text for p in b.points)


def test_a_topic_briefing_quotes_the_passages_its_topic_retrieves(seed_settings):
    from rag.retrieve import Retriever
    from rag.store import open_store

    topic = "the summit between Lee Jae Myung and Shigeru Ishiba"
    b = brief.build(seed_settings, topic=topic, max_points=2)
    store, embedder = open_store(seed_settings)
    try:
        retrieved = {h.chunk.chunk_id for h in Retriever(store, embedder).search(
            topic, k=brief.TOPIC_PASSAGES_PER_POINT * 2, pool=120, collapse=False)}
    finally:
        store.close()
    cited = {c.chunk_id for p in b.points for c in p.citations}
    assert b.points and cited <= retrieved


def test_a_heading_is_never_a_point():
    text = ("A Brief History of Debian - Chapter 4. A Detailed History\n\n4.1. The 0.x "
            "Releases\n\nDebian was begun in August 1993 by Ian Murdock. It grew.\n")
    first = text.index("A Brief")
    prose = text.index("Debian was")
    assert brief._in_a_heading(text, first, text.index(" A Detailed"))
    assert not brief._in_a_heading(text, prose, text.index(" It grew"))
    assert not brief._in_a_heading("No line ends here", 0, 5)


def test_a_list_items_sentence_starts_after_its_bullet():
    text = ("The rules are few.\n- Patches must be tested before they are sent.\n"
            "* A fix goes to the stable tree after it is merged.\n• It must be small.")
    quoted = [text[a:b] for a, b in brief._sentence_spans(text)]
    assert quoted == ["The rules are few.", "Patches must be tested before they are sent.",
                      "A fix goes to the stable tree after it is merged.", "It must be small."]


def test_map_stays_within_its_budget(seed_settings, monkeypatch):
    """However large the corpus, a document brings at most SENTENCES_PER_DOC candidates read
    from at most CHUNKS_PER_DOC chunks, and the pool never exceeds POOL_LIMIT."""
    monkeypatch.setattr(brief, "CHUNKS_PER_DOC", 3)
    monkeypatch.setattr(brief, "LEAD_CHUNKS", 1)
    monkeypatch.setattr(brief, "SENTENCES_PER_DOC", 5)
    monkeypatch.setattr(brief, "POOL_LIMIT", 12)
    seen = []
    pool, vecs, scope, *_ = brief._map(seed_settings, None, 24, lambda *a: seen.append(a))
    assert len(pool) <= 12 and vecs.shape[0] == len(pool)
    for source in scope:
        mine = [s for s in pool if s.source == source]
        assert len(mine) <= 5
        assert len({s.chunk_id for s in mine}) <= 3
    assert seen[-1] == ("read", 3, 3)
    b = brief.build(seed_settings)
    assert b.points


def test_cli_json_prints_one_object(seed_settings):
    result = CliRunner().invoke(app, ["brief", "--json", "--index", str(seed_settings.index_dir),
                                      "--max-points", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 1 <= len(data["points"]) <= 5 and data["conflicts"]


def test_cli_markdown_shows_points_conflicts_and_quotes(seed_settings):
    result = CliRunner().invoke(app, ["brief", "--index", str(seed_settings.index_dir)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "## Key points" in out and "## Where the sources disagree" in out
    assert "Lee has since departed for Washington" in out
    assert re.search(r"\(\d sources?\)", out)


def test_times_and_figures_that_can_both_be_right_are_no_conflict():
    from rag.conflicts import _times_disagree, _within, details

    # a date and the same date told more or less precisely agree; a date and "last week" are
    # not compared; two dates that differ in a part both give disagree
    assert not _times_disagree("august 16th, 1993", "august 1993")
    assert not _times_disagree("april", "april 8, 2010")
    assert not _times_disagree("november", "last year")
    assert _times_disagree("2014", "october 2013")
    assert _times_disagree("since last fall", "since the invasion began")
    # "Mayor" is no month, and a day may be an ordinal
    assert [t for t, _, _ in details("New York City Mayor Bill de Blasio said Sunday").times] \
        == ["sunday"]
    assert [t for t, _, _ in details("It was founded on August 16th, 1993.").times] \
        == ["august 16th, 1993"]
    # "13" meets "at least 13"; "roughly 600" may fall short of "over 600"
    assert _within("13", "exact", "at least 13", "lower")
    assert not _within("roughly 600", "approx", "Over 600", "lower")


class _Candidate:
    """A briefing candidate as rag.conflicts reads one: a sentence of a source."""

    def __init__(self, source, text):
        self.source, self.text, self.start = source, text, 0

    def citation(self, n):
        from rag.types import Citation

        return Citation(n=n, source=self.source, chunk_id="c", text=self.text, start=0,
                        end=len(self.text))


def _conflicts(settings, *sources_and_texts):
    """rag.conflicts over candidates embedded by the real model: (conflicts, disputed pairs)."""
    from rag.conflicts import find_conflicts
    from rag.store import open_store

    pool = [_Candidate(source, text) for source, text in sources_and_texts]
    store, embedder = open_store(settings)
    try:
        vecs = embedder.embed([c.text for c in pool])
    finally:
        store.close()
    return find_conflicts(pool, vecs)


def test_figures_a_qualifier_reconciles_are_no_conflict(seed_settings):
    _, disputed = _conflicts(
        seed_settings,
        ("a.txt", "Israel launched more than 30 air strikes on Gaza overnight."),
        ("b.txt", "Israel launched 34 air strikes on Gaza overnight."),
        ("c.txt", "Israel launched 12 air strikes on Gaza overnight."))
    # 34 is more than 30; 12 is not, and 12 is not 34
    assert disputed == {(0, 2), (1, 2)}


def test_two_figures_disputed_by_the_same_sentences_are_one_aspect(seed_settings):
    conflicts, _ = _conflicts(
        seed_settings,
        ("a.txt", "The new glass bridge is 430 meters long and 300 meters high."),
        ("b.txt", "The new glass bridge is 375 meters long and 260 meters high."))
    assert len(conflicts) == 1
    assert conflicts[0].aspect == "figures"
    assert conflicts[0].text.startswith("Sources differ on the figure: ")


def test_spans_of_time_compare_only_at_one_length():
    from rag.conflicts import _times_disagree

    assert _times_disagree("last week", "this week")
    assert not _times_disagree("earlier this month", "last week")
    assert not _times_disagree("this weekend", "sunday")
