"""The seed briefing against the key facts and disagreements written in seed_facts.json."""

import json
import re
from pathlib import Path

import pytest

from rag import brief

FACTS = json.loads((Path(__file__).parent / "seed_facts.json").read_text())


@pytest.fixture(scope="module")
def seed_brief(seed_settings):
    return brief.build(seed_settings, max_points=12)


def _text_of(b):
    return " ".join(p.text for p in b.points)


def test_every_point_is_cited_verbatim(seed_brief):
    assert seed_brief.points
    for p in seed_brief.points + seed_brief.conflicts:
        assert p.citations
        for c in p.citations:
            assert Path(c.source).read_text(encoding="utf-8")[c.start:c.end] == c.text
        assert {int(n) for n in re.findall(r"\[(\d+)\]", p.text)} <= {c.n for c in p.citations}


def test_every_document_contributes(seed_brief):
    cited = {Path(c.source).name[:3] for p in seed_brief.points for c in p.citations}
    assert cited == {"000", "002", "003"}


def test_merged_points_count_their_sources(seed_brief):
    multi = [p for p in seed_brief.points if p.n_sources > 1]
    assert multi
    for p in multi:
        assert len({c.source for c in p.citations}) == p.n_sources


def test_lee_travel_disagreement_is_a_conflict(seed_brief):
    lee = [c for c in seed_brief.conflicts if "Washington" in c.text and "Lee" in c.text]
    assert lee, [c.text for c in seed_brief.conflicts]
    sources = {Path(c.source).name[:3] for c in lee[0].citations}
    assert sources == {"000", "002"}


def test_briefing_is_deterministic(seed_settings, seed_brief):
    again = brief.build(seed_settings, max_points=12)
    assert brief.as_json(again) == brief.as_json(seed_brief)


def test_json_shape(seed_brief):
    data = brief.as_json(seed_brief)
    assert set(data) >= {"topic", "points", "conflicts", "sources"}
    for p in data["points"] + data["conflicts"]:
        assert isinstance(p["text"], str)
        for c in p["citations"]:
            assert set(c) >= {"n", "source", "chunk_id", "text"}
    listed = {s["source"] for s in data["sources"]}
    assert {c["source"] for p in data["points"] for c in p["citations"]} <= listed
    assert len(listed) == 3

def test_topic_briefing_stays_on_topic(seed_settings):
    b = brief.build(seed_settings, topic="North Korean troops in Russia", max_points=4)
    assert b.topic == "North Korean troops in Russia"
    assert any("15,000" in p.text or "600" in p.text for p in b.points)
