"""The brief job: a cited briefing over the index or a topic.

Extractive by design: every point is a sentence quoted from a document, so it is supported by
its citation by construction. The work is in choosing: sentences from all documents are
embedded, sentences that say the same thing across outlets are merged into one point that
cites each of them, points are ranked by how many sources carry them, every document gets at
least one point, and merged sentences that give different numbers, dates or status (done vs
planned) become conflicts citing both sides. Deterministic for the same index."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np

from rag.chunking import split_sentences
from rag.config import Settings
from rag.ingest import open_store
from rag.retrieve import Retriever
from rag.types import Briefing, Citation, Point

SAME_FACT_COSINE = 0.72  # two sentences state the same fact
RELATED_COSINE = 0.55  # close enough that differing details are a disagreement
MAX_SENTENCES = 4000
MIN_WORDS = 6

_NUMBER = re.compile(r"\b(?:about|roughly|around|over|more than|at least|nearly|almost|"
                     r"some|up to|an estimated|estimated)?\s*\d[\d,.]*\b", re.I)
_TIME = re.compile(r"\b(?:january|february|march|april|may|june|july|august|september|"
                   r"october|november|december|monday|tuesday|wednesday|thursday|friday|"
                   r"saturday|sunday|last (?:year|week|month|fall|autumn|spring|summer|"
                   r"winter)|this (?:year|week|month)|since [a-z ]{3,25}?(?=,|\s(?:about|"
                   r"pyongyang|the|an?)\b))\b", re.I)
_PLANNED = re.compile(r"\b(?:is|are) (?:scheduled|due|expected|set|planning|going) to\b|"
                      r"\bwill (?!likely)\w+|\bplans? to\b|\bimminently\b|\bsoon\b", re.I)
_DONE = re.compile(r"\b(?:has|have) (?:since |already )?(?:departed|left|arrived|been sent|"
                   r"delivered|supplied|sent)\b|\bdeparted\b|\barrived\b", re.I)


@dataclass
class _Sentence:
    source: str
    chunk_id: str
    start: int
    end: int
    text: str
    order: int  # position across the corpus, for stable ties


@dataclass
class _Cluster:
    members: list[int] = field(default_factory=list)

    def sources(self, sents: list[_Sentence]) -> list[str]:
        return sorted({sents[i].source for i in self.members})


def _collect(settings: Settings, topic: str | None):
    store, embedder = open_store(settings)
    try:
        if topic:
            hits = Retriever(store, embedder).search(topic, k=40, pool=120, collapse=False)
            chunks = [h.chunk for h in hits]
            scope = sorted({c.source for c in chunks})
        else:
            chunks = [c for _, c in store.all_chunks()]
            scope = [s for s, _ in store.documents()]
        titles = dict(store.documents())
    finally:
        store.close()
    seen: set[tuple[str, int, int]] = set()
    sents: list[_Sentence] = []
    for c in sorted(chunks, key=lambda c: (c.source, c.start)):
        for a, b in split_sentences(c.text):
            key = (c.source, c.start + a, c.start + b)
            text = c.text[a:b]
            if key in seen or len(text.split()) < MIN_WORDS:
                continue
            seen.add(key)
            sents.append(_Sentence(c.source, c.chunk_id, key[1], key[2], text, len(sents)))
    return sents[:MAX_SENTENCES], scope, titles, embedder


def build(settings: Settings, topic: str | None = None, max_points: int = 10) -> Briefing:
    sents, scope, titles, embedder = _collect(settings, topic)
    if not sents:
        return Briefing(topic, (), (), tuple((s, titles.get(s, s)) for s in scope))
    vecs = embedder.embed([s.text for s in sents])
    centre = vecs.mean(axis=0)
    if topic:
        centre = centre + 2 * embedder.embed([topic])[0]
    centrality = vecs @ (centre / (np.linalg.norm(centre) or 1.0))
    sims = vecs @ vecs.T

    clusters = _cluster(sents, sims, centrality)
    ranked = sorted(clusters, key=lambda c: (-len(c.sources(sents)),
                                             -max(centrality[i] for i in c.members),
                                             min(c.members)))
    chosen = ranked[:max_points]
    covered = {s for c in chosen for s in c.sources(sents)}
    for c in ranked[max_points:]:  # every document in scope contributes at least one point
        new = set(c.sources(sents)) - covered
        if new:
            chosen.append(c)
            covered |= new
    points = tuple(_point(c, sents, centrality) for c in chosen)
    conflicts = tuple(_conflicts(sents, sims, clusters))
    sources = tuple((s, titles.get(s, s)) for s in scope)
    return Briefing(topic, points, conflicts, sources)


def _cluster(sents: list[_Sentence], sims: np.ndarray, centrality: np.ndarray) -> list[_Cluster]:
    order = sorted(range(len(sents)), key=lambda i: (-centrality[i], i))
    clusters: list[_Cluster] = []
    heads: list[int] = []
    for i in order:
        best, best_sim = None, SAME_FACT_COSINE
        for ci, h in enumerate(heads):
            if sims[i, h] >= best_sim and sents[i].source not in \
                    {sents[m].source for m in clusters[ci].members}:
                best, best_sim = ci, sims[i, h]
        if best is None:
            clusters.append(_Cluster([i]))
            heads.append(i)
        else:
            clusters[best].members.append(i)
    return clusters


def _citation(n: int, s: _Sentence) -> Citation:
    return Citation(n=n, source=s.source, chunk_id=s.chunk_id, text=s.text, start=s.start,
                    end=s.end)


def _point(cluster: _Cluster, sents: list[_Sentence], centrality: np.ndarray) -> Point:
    members = sorted(cluster.members, key=lambda i: (-centrality[i], i))
    head = sents[members[0]]
    cites = tuple(_citation(n + 1, sents[i]) for n, i in enumerate(members))
    markers = "".join(f"[{c.n}]" for c in cites)
    return Point(text=f"{head.text} {markers}", citations=cites,
                 n_sources=len(cluster.sources(sents)))


def _details(text: str) -> dict[str, set[str]]:
    return {
        "number": {re.sub(r"\s+", " ", m.group().strip().lower()) for m in _NUMBER.finditer(text)},
        "time": {m.group().lower() for m in _TIME.finditer(text)},
        "status": ({"planned"} if _PLANNED.search(text) else set())
        | ({"done"} if _DONE.search(text) else set()),
    }


def _disagreement(a: str, b: str) -> str | None:
    da, db = _details(a), _details(b)
    if da["status"] and db["status"] and da["status"] != db["status"]:
        return "whether it has happened or is only planned"
    if da["number"] and db["number"] and da["number"].isdisjoint(db["number"]):
        return "the figures"
    if da["time"] and db["time"] and da["time"].isdisjoint(db["time"]):
        return "the timing"
    return None


def _conflicts(sents: list[_Sentence], sims: np.ndarray, clusters: list[_Cluster]) -> list[Point]:
    out: list[Point] = []
    seen: set[tuple[int, int]] = set()
    for i in range(len(sents)):
        for j in range(i + 1, len(sents)):
            if sents[i].source == sents[j].source or sims[i, j] < RELATED_COSINE:
                continue
            aspect = _disagreement(sents[i].text, sents[j].text)
            if aspect is None or (i, j) in seen:
                continue
            seen.add((i, j))
            ci, cj = _citation(1, sents[i]), _citation(2, sents[j])
            text = (f"Sources differ on {aspect}: “{sents[i].text}” [1] — "
                    f"“{sents[j].text}” [2]")
            out.append(Point(text=text, citations=(ci, cj), n_sources=2))
    out.sort(key=lambda p: -float(sims[_index(sents, p.citations[0]),
                                      _index(sents, p.citations[1])]))
    return out[:12]


def _index(sents: list[_Sentence], c: Citation) -> int:
    for i, s in enumerate(sents):
        if s.source == c.source and s.start == c.start:
            return i
    return 0


def as_json(b: Briefing) -> dict:
    return {
        "topic": b.topic,
        "points": [{"text": p.text, "n_sources": p.n_sources,
                    "citations": [c.as_json() for c in p.citations]} for p in b.points],
        "conflicts": [{"text": p.text, "citations": [c.as_json() for c in p.citations]}
                      for p in b.conflicts],
        "sources": [{"source": s, "title": t} for s, t in b.sources],
    }


def as_markdown(b: Briefing) -> str:
    lines = [f"# Briefing{': ' + b.topic if b.topic else ''}", ""]
    lines.append(f"{len(b.points)} points from {len(b.sources)} documents.")
    lines.append("")
    lines.append("## Key points")
    for p in b.points:
        lines.append(f"- {p.text} ({p.n_sources} source{'s' if p.n_sources != 1 else ''})")
        for c in p.citations:
            lines.append(f"    [{c.n}] {c.source}")
    if b.conflicts:
        lines += ["", "## Where the sources disagree"]
        for p in b.conflicts:
            lines.append(f"- {p.text}")
            for c in p.citations:
                lines.append(f"    [{c.n}] {c.source}")
    lines += ["", "## Sources"]
    for s, t in b.sources:
        lines.append(f"- {s}: {t}")
    return "\n".join(lines) + "\n"


def as_html(b: Briefing) -> str:
    def cited(p: Point, kind: str, k: int) -> str:
        body = html.escape(re.sub(r"\s*(\[\d+\])+$", "", p.text))
        refs = "".join(
            f'<a class="cite" href="#{kind}{k}-{c.n}" title="{html.escape(c.source)}: '
            f'{html.escape(c.text)}">[{c.n}]</a>' for c in p.citations)
        quotes = "".join(
            f'<li id="{kind}{k}-{c.n}"><b>[{c.n}]</b> <span class="src">'
            f'{html.escape(c.source)}</span><blockquote>{html.escape(c.text)}</blockquote></li>'
            for c in p.citations)
        return f'<li><p>{body} {refs}</p><ol class="quotes">{quotes}</ol></li>'

    points = "".join(cited(p, "p", k) for k, p in enumerate(b.points))
    conflicts = "".join(cited(p, "c", k) for k, p in enumerate(b.conflicts))
    sources = "".join(f"<li>{html.escape(s)}: {html.escape(t)}</li>" for s, t in b.sources)
    title = "Briefing" + (f": {html.escape(b.topic)}" if b.topic else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;line-height:1.5;
color:#222}}
.cite{{color:#0645ad;text-decoration:none;font-size:.85em;vertical-align:super}}
blockquote{{margin:.2rem 0 .6rem 1rem;padding-left:.6rem;border-left:3px solid #ccc;
color:#444}}
.src{{font-family:monospace;font-size:.8em;color:#666}}
ol.quotes{{font-size:.9em;list-style:none;padding-left:1rem}}
</style></head><body>
<h1>{title}</h1>
<h2>Key points</h2><ul id="points">{points}</ul>
<h2>Where the sources disagree</h2><ul id="conflicts">{conflicts}</ul>
<h2>Sources</h2><ul id="sources">{sources}</ul>
</body></html>
"""
