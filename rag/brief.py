"""The brief job: a cited briefing over the index or a topic.

Extractive by design: every point is a sentence quoted from a document, so it is supported by
its citation by construction, and each is checked verbatim against the stored document before
it is kept. (The bundled 135M/270M models were measured as writers on Multi-News, see
bench/results_briefing.md: they score far below the extractive briefing and are not
faithful, so no model writes points.)

Map, then merge, so time grows linearly with the corpus and memory stays bounded:
  map     each document on its own: its sentences (from at most CHUNKS_PER_DOC chunks) are
          embedded and the SENTENCES_PER_DOC most central to the document, with a lead bonus,
          become candidates; the pool of candidates never exceeds POOL_LIMIT.
  merge   candidates that state the same fact in different sources become one cluster; the
          points are the clusters chosen greedily for centrality, support (how many sources
          carry them) and coverage, minus redundancy; every document gets a point when the
          budget allows.
  compare candidates from different sources that concern the same thing are compared on
          figures, timing, status (done vs planned) and certainty; differences become
          conflicts citing each side (rag.conflicts).
Deterministic for the same index."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rag.chunking import split_sentences
from rag.citations import verbatim
from rag.config import Settings
from rag.conflicts import Conflict, details, find_conflicts, names
from rag.retrieve import Retriever
from rag.store import open_store
from rag.text import STOPWORDS, content_words, stems
from rag.types import Briefing, Citation, Point

Progress = Callable[[str, int, int], None]  # (stage, done, total)

CHUNKS_PER_DOC = 24  # map budget per document, in stored chunks (~128 tokens each)
LEAD_CHUNKS = 2  # always read the opening of a long document
SENTENCES_PER_DOC = 40  # candidates one document brings to the merge
POOL_LIMIT = 4000  # candidates kept across the corpus
MIN_WORDS, MAX_WORDS = 6, 80
SAME_FACT_COSINE = 0.72  # two sentences may state the same fact...
SAME_WORDS = 0.35  # ...when they share this share of their content words
CLEARLY_SAME_COSINE = 0.85  # ...or in any case
# Sentence choice, tuned on the first half of the Multi-News sample (bench/briefing.py).
LEAD_WEIGHT = 0.5
SPECIFIC_WEIGHT = 2.0
SUPPORT_WEIGHT = 1.0
TOPIC_WEIGHT = 2.0
CENTRAL_WEIGHT = 0.5
CONCEPT_POWER = 1.0
MAX_WORDS_DEFAULT = 300
# A topic's briefing reads this many of the passages retrieved for the topic a point: the
# candidates stay on the topic (docs/briefing.md)
TOPIC_PASSAGES_PER_POINT = 2
# ...and ranks its sentences by their cosine to the topic, at this weight beside the scores
# above: tuned on SQuAD's even questions as topics (bench/topic_briefing.py) and on the natural
# calibration set's requests (bench/calibration/)
TOPIC_RELEVANCE = 8.0


@dataclass
class _Sentence:
    source: str
    chunk_id: str
    start: int
    end: int
    text: str
    doc: int  # document number in scope order
    position: int  # sentence number within its document
    central: float = 0.0  # cosine to the document's own centroid

    def citation(self, n: int) -> Citation:
        return Citation(n=n, source=self.source, chunk_id=self.chunk_id, text=self.text,
                        start=self.start, end=self.end)

    @property
    def local(self) -> float:
        """Worth within its document: central, and early (news puts the key facts first)."""
        return self.central + LEAD_WEIGHT / np.sqrt(1 + self.position)


@dataclass
class _Cluster:
    members: list[int] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


# -- map: documents -> candidate sentences ----------------------------------------------------

_LOWER_START = re.compile(r"(?<=[a-z]{3}[.!?])\s+(?=[a-z])")  # "assistance. in November"
_BULLET = re.compile(r"[-*•‣–]\s+")  # a list item's mark: hyphen, asterisk, bullets, en dash


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """split_sentences, also cutting where a sentence plainly ends before a lower-case word; a
    list item's sentence starts after its mark (_BULLET), which a point's own "- " would
    otherwise double."""
    spans = []
    for a, b in split_sentences(text):
        cursor = a
        for m in _LOWER_START.finditer(text, a, b):
            spans.append((cursor, m.start()))
            cursor = m.end()
        spans.append((cursor, b))
    return [(a + len(m.group()) if (m := _BULLET.match(text, a, b)) else a, b)
            for a, b in spans]


def _usable(text: str) -> bool:
    """A sentence worth quoting: not a headline, a caption or a scrap of page furniture."""
    n = len(text.split())
    return (MIN_WORDS <= n <= MAX_WORDS and text[-1] in ".!?\"”’')"
            and sum(ch.isalpha() for ch in text) > len(text) / 2)


def _in_a_heading(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] lies on a line of its own that ends without a sentence's closing
    mark ("A Brief History of Debian - Chapter 4. A Detailed History"): a title, not prose. A
    line running past the text is not judged."""
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", end)
    if b < 0:
        return False
    line = text[a:b].rstrip()
    return bool(line) and line[-1] not in ".!?:;\"”’')"


def _read_document(store, source: str, doc: int, chunks: list | None) -> list[_Sentence]:
    """The sentences of one document, from at most CHUNKS_PER_DOC of its chunks."""
    if chunks is None:
        rows = store.all_chunks(source)
        if len(rows) > CHUNKS_PER_DOC:
            vecs = store.vectors([r for r, _ in rows])
            centre = vecs.mean(axis=0)
            rest = sorted(range(LEAD_CHUNKS, len(rows)),
                          key=lambda i: (-float(vecs[i] @ centre), i))
            keep = sorted(list(range(LEAD_CHUNKS)) + rest[:CHUNKS_PER_DOC - LEAD_CHUNKS])
            rows = [rows[i] for i in keep]
        chunks = [c for _, c in rows]
    seen: set[int] = set()
    said: set[str] = set()  # a sentence the document repeats is one candidate, not many
    out: list[_Sentence] = []
    for c in sorted(chunks, key=lambda c: c.start):
        for a, b in _sentence_spans(c.text):
            if c.start + a in seen:
                continue
            seen.add(c.start + a)
            text = c.text[a:b]
            folded = " ".join(text.lower().split())
            if folded in said:
                continue
            said.add(folded)
            if _usable(text) and not _in_a_heading(c.text, a, b):
                out.append(_Sentence(c.source, c.chunk_id, c.start + a, c.start + b, text, doc, 0))
    out.sort(key=lambda s: s.start)
    for i, s in enumerate(out):
        s.position = i
    return out


def _map(settings: Settings, topic: str | None, passages: int, progress: Progress | None):
    store, embedder = open_store(settings)
    try:
        titles = dict(store.documents())
        if topic:
            hits = Retriever(store, embedder, late=settings.late_interaction,
                             tuning=settings.retrieval).search(
                topic, k=passages, pool=120, collapse=False)
            by_source: dict[str, list] = {}
            for h in hits:
                by_source.setdefault(h.chunk.source, []).append(h.chunk)
            scope = sorted(by_source)
        else:
            by_source = {}
            scope = sorted(titles)
        pool: list[_Sentence] = []
        vecs = np.zeros((0, embedder.dimension), dtype=np.float32)
        n_read = 0
        for d, source in enumerate(scope):
            if progress:
                progress("read", d, len(scope))
            sents = _read_document(store, source, d, by_source.get(source))
            n_read += len(sents)
            if not sents:
                continue
            v = embedder.embed([s.text for s in sents])
            mean = v.mean(axis=0)
            central = v @ (mean / (np.linalg.norm(mean) or 1.0))
            for s, c in zip(sents, central):
                s.central = float(c)
            keep = sorted(range(len(sents)),
                          key=lambda i: (-sents[i].local, i))[:SENTENCES_PER_DOC]
            keep.sort()
            pool.extend(sents[i] for i in keep)
            vecs = np.vstack([vecs, v[keep]])
            if len(pool) > POOL_LIMIT:
                best = sorted(range(len(pool)), key=lambda i: (-pool[i].local, i))[:POOL_LIMIT]
                best.sort()
                pool, vecs = [pool[i] for i in best], vecs[best]
        if progress:
            progress("read", len(scope), len(scope))
        topic_vec = embedder.embed([topic])[0] if topic else None
    finally:
        store.close()
    return pool, vecs, scope, titles, topic_vec, n_read


# -- merge: candidates -> points --------------------------------------------------------------

def _cluster(pool: list[_Sentence], vecs: np.ndarray, score: np.ndarray,
             disputed: set[tuple[int, int]] = frozenset()) -> list[_Cluster]:
    """Greedy, best first: a sentence joins the closest cluster head stating the same fact, from
    a source that cluster does not hold yet. Close in meaning is not enough below
    CLEARLY_SAME_COSINE: the two must also share words, and must not be in dispute.
    O(pool x clusters), never pool x pool in memory."""
    clusters: list[_Cluster] = []
    heads = np.zeros((len(pool), vecs.shape[1]), dtype=np.float32)
    head_ids: list[int] = []
    words: dict[int, set[str]] = {}

    def overlap(a: int, b: int) -> float:
        wa = words.setdefault(a, content_words(pool[a].text))
        wb = words.setdefault(b, content_words(pool[b].text))
        return len(wa & wb) / (min(len(wa), len(wb)) or 1)

    for i in sorted(range(len(pool)), key=lambda i: (-score[i], i)):
        best, best_sim = None, SAME_FACT_COSINE
        if clusters:
            sims = heads[:len(clusters)] @ vecs[i]
            for ci in np.flatnonzero(sims >= SAME_FACT_COSINE):
                h = head_ids[ci]
                if (sims[ci] >= best_sim and pool[i].source not in clusters[ci].sources
                        and (sims[ci] >= CLEARLY_SAME_COSINE or overlap(i, h) >= SAME_WORDS)
                        and (min(i, h), max(i, h)) not in disputed):
                    best, best_sim = int(ci), float(sims[ci])
        if best is None:
            heads[len(clusters)] = vecs[i]
            head_ids.append(i)
            clusters.append(_Cluster([i], {pool[i].source}))
        else:
            clusters[best].members.append(i)
            clusters[best].sources.add(pool[i].source)
    return clusters


def _concepts(text: str) -> set[str]:
    """Word pairs (stemmed) that are not both function words: the units of content."""
    ws = stems(text)
    return {f"{a} {b}" for a, b in zip(ws, ws[1:]) if a not in STOPWORDS or b not in STOPWORDS}


def _select(clusters: list[_Cluster], pool: list[_Sentence], score: np.ndarray,
            disputed: set[tuple[int, int]], n_docs: int, max_points: int,
            max_words: int | None) -> list[_Cluster]:
    """Greedy coverage: each step takes the cluster whose head adds the most content not yet
    covered, per word, weighting each word pair by how many sources carry it, plus the head's
    own score (centrality and lead) and its support. Then documents not yet cited get their
    best cluster while that stays a short list."""
    spread: dict[str, set[str]] = {}
    for s in pool:
        for c in _concepts(s.text):
            spread.setdefault(c, set()).add(s.source)
    weight = {c: len(s) ** CONCEPT_POWER for c, s in spread.items()}
    heads = [c.members[0] for c in clusters]
    concepts = [_concepts(pool[h].text) for h in heads]
    length = [len(pool[h].text.split()) for h in heads]
    # sources that report the same thing, agreeing or not: how much the story turns on it
    reported = [set(c.sources) for c in clusters]
    where = {i: k for k, c in enumerate(clusters) for i in c.members}
    rivals: dict[int, set[int]] = {}
    for i, j in disputed:
        reported[where[i]] |= clusters[where[j]].sources
        reported[where[j]] |= clusters[where[i]].sources
        rivals.setdefault(where[i], set()).add(where[j])
        rivals.setdefault(where[j], set()).add(where[i])
    base = [score[h] + SUPPORT_WEIGHT * (len(r) - 1) for h, r in zip(heads, reported)]
    covered: set[str] = set()
    chosen: list[int] = []
    words = 0
    open_ = set(range(len(clusters)))
    while open_ and len(chosen) < max_points and (max_words is None or words < max_words):
        gain = {k: sum(weight[c] for c in concepts[k] - covered) / length[k] + base[k]
                for k in open_}
        best = max(open_, key=lambda k: (gain[k], -k))
        chosen.append(best)
        open_.discard(best)
        for r in rivals.get(best, ()):  # the other side is shown among the conflicts already
            base[r] = min(base[r], score[heads[r]])
        covered |= concepts[best]
        words += length[best]
    cited = {s for k in chosen for s in clusters[k].sources}
    if n_docs <= max_points:
        for k in sorted(open_, key=lambda k: (-base[k], k)):
            if clusters[k].sources - cited:
                chosen.append(k)
                cited |= clusters[k].sources
    return [clusters[k] for k in chosen]


def _point(cluster: _Cluster, pool: list[_Sentence]) -> Point:
    cites = tuple(pool[i].citation(n + 1) for n, i in enumerate(cluster.members))
    markers = "".join(f"[{c.n}]" for c in cites)
    return Point(text=f"{cites[0].text} {markers}", citations=cites,
                 n_sources=len(cluster.sources))


def build(settings: Settings, topic: str | None = None, max_points: int = 12,
          max_words: int | None = MAX_WORDS_DEFAULT, progress: Progress | None = None,
          passages: int | None = None) -> Briefing:
    """The briefing: at most max_points points, stopping once they hold max_words words. With a
    topic, read from `passages` retrieved for it (TOPIC_PASSAGES_PER_POINT a point)."""
    pool, vecs, scope, titles, topic_vec, _ = _map(
        settings, topic, passages or TOPIC_PASSAGES_PER_POINT * max_points, progress)
    sources = tuple((s, titles.get(s, s)) for s in scope)
    if progress:
        progress("merge", 0, 1)
    chosen, conflicts = _plan(pool, vecs, topic_vec, len(scope), max_points, max_words)
    points = tuple(p for p in (_point(c, pool) for c in chosen) if _verified(settings, p))
    if progress:
        progress("merge", 1, 1)
    return Briefing(topic, points, tuple(conflicts), sources)


def _plan(pool: list[_Sentence], vecs: np.ndarray, topic_vec: np.ndarray | None, n_docs: int,
          max_points: int, max_words: int | None) -> tuple[list[_Cluster], list[Conflict]]:
    """The merge, on the candidates alone: the clusters to make points of, and the conflicts."""
    if not pool:
        return [], []
    centre = vecs.mean(axis=0)
    centre /= np.linalg.norm(centre) or 1.0
    if topic_vec is not None:
        centre = centre + TOPIC_WEIGHT * topic_vec
        centre /= np.linalg.norm(centre)
    central = vecs @ centre + np.array([s.central for s in pool])
    lead = np.array([LEAD_WEIGHT / np.sqrt(1 + s.position) for s in pool])
    score = CENTRAL_WEIGHT * central + lead + _specificity(pool)
    if topic_vec is not None:
        score = score + TOPIC_RELEVANCE * (vecs @ topic_vec)
    conflicts, disputed = find_conflicts(pool, vecs)
    clusters = _cluster(pool, vecs, score, disputed)
    return _select(clusters, pool, score, disputed, n_docs, max_points, max_words), conflicts


def _specificity(pool: list[_Sentence]) -> np.ndarray:
    """A bonus for names, figures and dates that few candidates mention: the particular facts,
    as against what every article says about the topic."""
    anchors = [_anchors(s.text) for s in pool]
    df: dict[str, int] = {}
    for a in anchors:
        for x in a:
            df[x] = df.get(x, 0) + 1
    return np.array([SPECIFIC_WEIGHT * min(sum(1 / df[x] for x in a), 2.0) / 2 for a in anchors])


def _anchors(text: str) -> set[str]:
    """Names, figures and dates (a date twice: it marks an event; "since ..." spans are not)."""
    d = details(text)
    dates = {t[0] for t in d.times if not t[0].startswith("since")}
    return (names(text) - {t.split()[-1] for t in dates} | {f"{n[0]:g}" for n in d.numbers}
            | dates | {f"{t} (date)" for t in dates})


def _verified(settings: Settings, p: Point) -> bool:
    """Every citation stands verbatim at its offsets in the stored document."""
    store, _ = open_store(settings)
    try:
        return all(verbatim(c, store.document_text(c.source) or "") for c in p.citations)
    finally:
        store.close()


# -- output -----------------------------------------------------------------------------------

def as_json(b: Briefing) -> dict:
    return {
        "topic": b.topic,
        "points": [{"text": p.text, "n_sources": p.n_sources, "method": "extractive",
                    "verified": True,
                    "citations": [c.as_json() for c in p.citations]} for p in b.points],
        "conflicts": [{"text": p.text, "aspect": getattr(p, "aspect", ""),
                       "sides": [{"says": s, "citations": list(ns)}
                                 for s, ns in getattr(p, "sides", ())],
                       "citations": [c.as_json() for c in p.citations]}
                      for p in b.conflicts],
        "sources": [{"source": s, "title": t} for s, t in b.sources],
    }
