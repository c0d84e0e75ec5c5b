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
          conflicts citing each side.
Deterministic for the same index."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import split_sentences
from rag.citations import verbatim
from rag.config import Settings
from rag.retrieve import STOPWORDS, Retriever
from rag.store import open_store
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
RELATED_COSINE = 0.5  # may concern the same thing: worth comparing details
SAME_EVENT_COSINE = 0.7  # with shared content words: the same event, told differently
MAX_CONFLICTS = 12
# Sentence choice, tuned on the first half of the Multi-News sample (bench/briefing.py).
LEAD_WEIGHT = 0.5
SPECIFIC_WEIGHT = 2.0
SUPPORT_WEIGHT = 1.0
TOPIC_WEIGHT = 2.0
CENTRAL_WEIGHT = 0.5
CONCEPT_POWER = 1.0
MAX_WORDS_DEFAULT = 300


@dataclass(frozen=True)
class Conflict(Point):
    aspect: str = ""  # "figures", "timing", "status", "certainty", joined by " and "
    sides: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (what this side says, citation ns)


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


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """split_sentences, also cutting where a sentence plainly ends before a lower-case word."""
    spans = []
    for a, b in split_sentences(text):
        cursor = a
        for m in _LOWER_START.finditer(text, a, b):
            spans.append((cursor, m.start()))
            cursor = m.end()
        spans.append((cursor, b))
    return spans


def _usable(text: str) -> bool:
    """A sentence worth quoting: not a headline, a caption or a scrap of page furniture."""
    n = len(text.split())
    return (MIN_WORDS <= n <= MAX_WORDS and text[-1] in ".!?\"”’')"
            and sum(ch.isalpha() for ch in text) > len(text) / 2)


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
            if _usable(text):
                out.append(_Sentence(c.source, c.chunk_id, c.start + a, c.start + b, text, doc, 0))
    out.sort(key=lambda s: s.start)
    for i, s in enumerate(out):
        s.position = i
    return out


def _map(settings: Settings, topic: str | None, progress: Progress | None):
    store, embedder = open_store(settings)
    try:
        titles = dict(store.documents())
        if topic:
            hits = Retriever(store, embedder, late=settings.late_interaction).search(
                topic, k=40, pool=120, collapse=False)
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
        wa = words.setdefault(a, _words(pool[a].text))
        wb = words.setdefault(b, _words(pool[b].text))
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
    ws = [_stem(w) for w in re.findall(r"[a-z0-9]+", _unpossess(text.lower()))]
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


def _citation(n: int, s: _Sentence) -> Citation:
    return Citation(n=n, source=s.source, chunk_id=s.chunk_id, text=s.text, start=s.start,
                    end=s.end)


def _point(cluster: _Cluster, pool: list[_Sentence]) -> Point:
    cites = tuple(_citation(n + 1, pool[i]) for n, i in enumerate(cluster.members))
    markers = "".join(f"[{c.n}]" for c in cites)
    return Point(text=f"{cites[0].text} {markers}", citations=cites,
                 n_sources=len(cluster.sources))


def build(settings: Settings, topic: str | None = None, max_points: int = 12,
          max_words: int | None = MAX_WORDS_DEFAULT, progress: Progress | None = None) -> Briefing:
    """The briefing: at most max_points points, stopping once they hold max_words words."""
    pool, vecs, scope, titles, topic_vec, _ = _map(settings, topic, progress)
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
    conflicts, disputed = _conflicts(pool, vecs)
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
    d = _details(text)
    dates = {t[0] for t in d.times if not t[0].startswith("since")}
    return (_names(text) - {t.split()[-1] for t in dates} | {f"{n[0]:g}" for n in d.numbers}
            | dates | {f"{t} (date)" for t in dates})


def _verified(settings: Settings, p: Point) -> bool:
    """Every citation stands verbatim at its offsets in the stored document."""
    store, _ = open_store(settings)
    try:
        return all(verbatim(c, store.document_text(c.source) or "") for c in p.citations)
    finally:
        store.close()


# -- compare: candidates -> conflicts ---------------------------------------------------------

_QUALIFIER = {
    "approx": r"about|roughly|around|approximately|an estimated|estimated|some|nearly|almost|"
              r"close to",
    "lower": r"over|more than|at least|upwards of|in excess of|above",
    "upper": r"up to|fewer than|less than|under|below|at most",
}
_NUMBER = re.compile(r"(?:\b(?P<q>" + "|".join(_QUALIFIER.values()) + r")\s+)?"
                     r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
                     r"(?:\s+(?P<scale>million|billion|thousand|percent))?(?![\w%])", re.I)
_MONTH = (r"January|February|March|April|May(?!\s+(?:be|have|not|also|well))|June|July|"
          r"August|September|October|November|December")
_TIME = re.compile(
    r"\b(?:(?:in|on|since|by|until|during)\s+)?(?:" + _MONTH + r")(?:\s+\d{1,2}\b)?(?:,?\s+\d{4})?"
    r"|\b(?:on\s+)?(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b"
    r"|\b(?:last|this|next|earlier this|later this)\s+(?:year|week|month|fall|autumn|spring|"
    r"summer|winter|weekend)\b"
    r"|\b[Ss]ince\s+(?:the|last|early|late|mid)\s+[\w’'-]+"
    r"(?:\s+(?!about|around|roughly|some|an?\b)[\w’'-]+){0,2}"
    r"|\b(?:in|since)\s+(?:19|20)\d{2}\b")
_DONE = re.compile(r"\b(?:has|have|had)\s+(?:since\s+|already\s+)?(?:departed|left|arrived|"
                   r"concluded|returned|been\s+(?:sent|delivered|deployed|released))\b|"
                   r"\b(?:departed|arrived)\b", re.I)
_PLANNED = re.compile(r"\b(?:is|are|was|were)\s+(?:scheduled|due|expected|set|planning|going)\s+"
                      r"to\b|\bwill\s+(?!likely\b)\w+|\bplans?\s+to\b|\bimminently\b|\bsoon\b",
                      re.I)
_HEDGE = re.compile(r"\b(?:possibly|suggested|suggests|allegedly|unconfirmed|unverified|"
                    r"rumou?red|(?:may|might|could)\s+have)\b", re.I)
_ASSERT = re.compile(r"\b(?:stated|said|says|confirmed|announced|already|according to)\b", re.I)
_CLAUSE = re.compile(r",\s+(?=(?:where|which|while|though|although|but)\b)|;\s+|\s+[–—]\s+")


def _unpossess(text: str) -> str:
    return re.sub(r"[’']s\b", "", text)


def _stem(w: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix) and not w.endswith("ss"):
            return w[:-len(suffix)]
    return w


def _words(text: str) -> set[str]:
    """Content words, stemmed."""
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", _unpossess(text.lower()))
            if w not in STOPWORDS and len(w) > 2}


@dataclass
class _Details:
    numbers: list[tuple[float, str, str, set[str], tuple[int, int]]]  # value, class, said, unit
    times: list[tuple[str, str, tuple[int, int]]]  # normalised, as said, span
    clauses: list[tuple[str, str, tuple[int, int]]]  # status, clause text, span
    hedged: str | None  # the hedging word
    asserted: str | None
    words: set[str]


def _details(text: str) -> _Details:
    times = [(re.sub(r"^(?:in|on|by|until|during)\s+", "", m.group().lower()), m.group(), m.span())
             for m in _TIME.finditer(text)]
    in_time = [span for *_, span in times]
    numbers = []
    for m in _NUMBER.finditer(text):
        a, b = m.span("n")
        if any(ta <= a < tb for ta, tb in in_time):
            continue  # a day or a year: timing, not a figure
        value = float(m.group("n").replace(",", ""))
        scale = (m.group("scale") or "").lower()
        value *= {"thousand": 1e3, "million": 1e6, "billion": 1e9}.get(scale, 1)
        q = (m.group("q") or "").lower()
        cls = next((k for k, pat in _QUALIFIER.items() if q and re.fullmatch(pat, q)), "exact")
        unit = _words(" ".join(text[m.end():].split()[:3]))
        numbers.append((value, cls, m.group().strip(), unit, m.span()))
    clauses = []
    cursor = 0
    for m in [*_CLAUSE.finditer(text), None]:
        end = m.start() if m else len(text)
        piece = text[cursor:end]
        done, planned = _DONE.search(piece), _PLANNED.search(piece)
        if bool(done) != bool(planned):
            clauses.append(("done" if done else "planned", piece, (cursor, end)))
        cursor = m.end() if m else end
    hedge = _HEDGE.search(text)
    claim = _ASSERT.search(text)
    return _Details(numbers, times, clauses, hedge.group().lower() if hedge else None,
                    claim.group().lower() if claim and not hedge else None,
                    _words(text) - _words(" ".join(t for _, t, _ in times)))


def _names(text: str) -> set[str]:
    """Proper names, case-folded: capitalised words that do not start the sentence."""
    words = re.findall(r"[\w-]+", _unpossess(text))
    return {w.lower() for w in words[1:] if w[:1].isupper() and w.lower() not in STOPWORDS}


@dataclass
class _Edge:
    aspect: str
    key: str  # what the two sides are about, e.g. the figure both report
    i: int
    j: int
    said: dict[int, tuple[str, str, str]]  # sentence -> (side key, as said, excerpt)
    sim: float


def _excerpt(text: str, span: tuple[int, int], before: int = 6, after: int = 8) -> str:
    """The words around text[span], cut from the text as it stands."""
    a, b = span
    head = [m.start() for m in re.finditer(r"\S+", text[:a])]
    tail = [m.end() for m in re.finditer(r"\S+", text[b:])]
    lo = head[-before] if len(head) >= before else 0
    hi = b + tail[after - 1] if len(tail) >= after else len(text)
    out = text[lo:hi].strip(" ,;.")
    return ("…" if lo > 0 else "") + out + ("…" if hi < len(text) else "")


def _compare(i: int, j: int, a: str, b: str, da: _Details, db: _Details,
             sim: float) -> list[_Edge]:
    edges: list[_Edge] = []
    values_a = {n[0] for n in da.numbers}
    values_b = {n[0] for n in db.numbers}
    shared = (da.words & db.words) - {w for n in da.numbers + db.numbers for w in n[3]}
    # figures: the same figure with incompatible qualifiers, or different figures of one thing
    anchors = set()
    for va, ca, sa, ua, spa in da.numbers:
        for vb, cb, sb, ub, spb in db.numbers:
            if va == vb and (va >= 10 or ua & ub):
                anchors.add(f"{va:g}")
                if ca != cb and {"lower", "upper"} & {ca, cb}:
                    edges.append(_Edge("figures", f"{va:g}", i, j, {
                        i: (ca, sa, _excerpt(a, spa)), j: (cb, sb, _excerpt(b, spb))}, sim))
            elif (ua & ub and sim >= SAME_EVENT_COSINE and va not in values_b
                  and vb not in values_a and va >= 10 and vb >= 10):
                edges.append(_Edge("figures", " ".join(sorted(ua & ub)), i, j, {
                    i: (f"{va:g}", sa, _excerpt(a, spa)),
                    j: (f"{vb:g}", sb, _excerpt(b, spb))}, sim))
    same_event = sim >= SAME_EVENT_COSINE and len(shared) >= 3
    # timing: the same fact (a shared figure, or the same event told alike), placed differently
    # ("since the war began" and "since the invasion" may well be one time: such spans are
    # compared only under a shared figure)
    times_a = [t for t in da.times if anchors or not t[0].startswith("since")]
    times_b = [t for t in db.times if anchors or not t[0].startswith("since")]
    if times_a and times_b and (anchors or same_event):
        if {t for t, _, _ in times_a}.isdisjoint(t for t, _, _ in times_b):
            (ka, sa, spa), (kb, sb, spb) = times_a[0], times_b[0]
            edges.append(_Edge("timing", " ".join(sorted(anchors)) or "event", i, j, {
                i: (ka, sa, _excerpt(a, spa)), j: (kb, sb, _excerpt(b, spb))}, sim))
    # status: one clause says it happened, the other that it is only planned
    for sa, pa, _ in da.clauses:
        for sb, pb, _ in db.clauses:
            common = _names(pa) & _names(pb)
            if (sa != sb and common and sim >= SAME_EVENT_COSINE
                    and len(_words(pa) & _words(pb)) >= 2):
                edges.append(_Edge("status", " ".join(sorted(common)), i, j, {
                    i: (sa, sa, pa.strip(" ,.")), j: (sb, sb, pb.strip(" ,."))}, sim))
    # certainty: one states as fact what the other only reports as possible
    if same_event and (da.hedged and db.asserted or db.hedged and da.asserted):
        ka = "hedged" if da.hedged else "asserted"
        kb = "hedged" if db.hedged else "asserted"
        edges.append(_Edge("certainty", "event", i, j, {
            i: (ka, ka, da.hedged or da.asserted or ""),
            j: (kb, kb, db.hedged or db.asserted or "")}, sim))
    return edges


def _pairs(pool: list[_Sentence], vecs: np.ndarray, idx: list[int], block: int = 512):
    """(i, j, cosine) for sentences of different sources that may concern the same thing,
    computed a block of rows at a time."""
    sub = vecs[idx]
    for r0 in range(0, len(idx), block):
        sims = sub[r0:r0 + block] @ sub.T
        for r, row in enumerate(sims):
            a = r0 + r
            for b in np.flatnonzero(row >= RELATED_COSINE):
                if b > a and pool[idx[a]].source != pool[idx[b]].source:
                    yield idx[a], idx[int(b)], float(row[b])


def _conflicts(pool: list[_Sentence],
               vecs: np.ndarray) -> tuple[list[Conflict], set[tuple[int, int]]]:
    """The conflicts, and the pairs of sentences found in dispute."""
    details = {i: _details(s.text) for i, s in enumerate(pool)}
    idx = [i for i, d in details.items()
           if d.numbers or d.times or d.clauses or d.hedged or d.asserted]
    edges: list[_Edge] = []
    for i, j, sim in _pairs(pool, vecs, idx):
        edges += _compare(i, j, pool[i].text, pool[j].text, details[i], details[j], sim)
    # one conflict per thing disputed: join the pairs about it into groups of sentences
    groups: dict[tuple[str, str], list[_Edge]] = {}
    for e in edges:
        groups.setdefault((e.aspect, e.key), []).append(e)
    components = [(aspect, comp) for (aspect, _), es in groups.items()
                  for comp in _connected(es)]
    # the same sentences disputed on several aspects make one entry
    merged: dict[frozenset[int], list[tuple[str, list[_Edge]]]] = {}
    for aspect, comp in components:
        members = frozenset(k for e in comp for k in (e.i, e.j))
        merged.setdefault(members, []).append((aspect, comp))
    out = [_conflict(pool, parts) for _, parts in merged.items()]
    out = [c for c in out if c is not None]
    out.sort(key=lambda c: (-c[0], c[1].text))
    return [c for _, c in out[:MAX_CONFLICTS]], {(min(e.i, e.j), max(e.i, e.j)) for e in edges}


def _connected(edges: list[_Edge]) -> list[list[_Edge]]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for e in edges:
        parent[find(e.i)] = find(e.j)
    out: dict[int, list[_Edge]] = {}
    for e in edges:
        out.setdefault(find(e.i), []).append(e)
    return list(out.values())


_SAYS = {"done": "has happened", "planned": "is only planned",
         "hedged": "only as a possibility", "asserted": "as fact"}
_ASPECTS = {"figures": "the figure", "timing": "the timing",
            "status": "whether it has happened or is only planned",
            "certainty": "how certain it is"}


def _conflict(pool: list[_Sentence], parts: list[tuple[str, list[_Edge]]]):
    parts = sorted(parts, key=lambda p: list(_ASPECTS).index(p[0]))
    said: dict[int, dict[str, tuple[str, str, str]]] = {}  # sentence -> aspect -> what it says
    best = max(e.sim for _, comp in parts for e in comp)
    for aspect, comp in parts:
        for e in comp:
            for k, what in e.said.items():
                said.setdefault(k, {}).setdefault(aspect, what)
    # a side: the sentences that say the same thing on every aspect disputed
    sides: dict[tuple[str, ...], list[int]] = {}
    for k in sorted(said, key=lambda k: (pool[k].source, pool[k].start)):
        sides.setdefault(tuple(said[k].get(a, ("?",))[0] for a, _ in parts), []).append(k)
    if len(sides) < 2 or len({pool[k].source for k in said}) < 2:
        return None
    cites: list[Citation] = []
    side_texts, side_list = [], []
    for members in sides.values():
        ns = []
        for k in members:
            cites.append(_citation(len(cites) + 1, pool[k]))
            ns.append(len(cites))
        names = ", ".join(dict.fromkeys(Path(pool[k].source).name for k in members))
        claims = []
        for aspect, (key, shown, excerpt) in said[members[0]].items():
            claim = _SAYS[key] if aspect in ("status", "certainty") else f"“{shown}”"
            claims.append(f"{claim} (“{excerpt}”)" if excerpt else claim)
        what = ", ".join(claims)
        side_texts.append(f"{names}: {what} {''.join(f'[{n}]' for n in ns)}")
        side_list.append((what, tuple(ns)))
    aspects = [a for a, _ in parts]
    text = (f"Sources differ on {' and '.join(_ASPECTS[a] for a in aspects)}: "
            + "; ".join(side_texts) + ".")
    conflict = Conflict(text=text, citations=tuple(cites),
                        n_sources=len({c.source for c in cites}),
                        aspect=" and ".join(aspects), sides=tuple(side_list))
    return best + 0.1 * len(aspects), conflict


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
