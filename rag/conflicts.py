"""Where the sources of a briefing disagree: candidate sentences from different sources that
concern the same thing are compared on figures, timing, status (done vs planned) and certainty,
and each difference becomes a conflict citing each side (rag.brief puts them in the briefing).

A candidate is any object with `source`, `start`, `text` and `citation(n)`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.text import STOPWORDS, content_words, unpossess
from rag.types import Citation, Point

RELATED_COSINE = 0.5  # may concern the same thing: worth comparing details
SAME_EVENT_COSINE = 0.7  # with shared content words: the same event, told differently
MAX_CONFLICTS = 12


@dataclass(frozen=True)
class Conflict(Point):
    aspect: str = ""  # "figures", "timing", "status", "certainty", joined by " and "
    sides: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (what this side says, citation ns)


_QUALIFIER = {
    "approx": r"about|roughly|around|approximately|an estimated|estimated|some|nearly|almost|"
              r"close to",
    "lower": r"over|more than|at least|upwards of|in excess of|above",
    "upper": r"up to|fewer than|less than|under|below|at most",
}
_NUMBER = re.compile(r"(?:\b(?P<q>" + "|".join(_QUALIFIER.values()) + r")\s+)?"
                     r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
                     r"(?:\s+(?P<scale>million|billion|thousand|percent))?(?![\w%])", re.I)
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_MONTH = (r"(?:January|February|March|April|May(?!\s+(?:be|have|not|also|well))|June|July|"
          r"August|September|October|November|December)\b")  # "Mayor" is no month
_TIME = re.compile(
    r"\b(?:(?:in|on|since|by|until|during)\s+)?" + _MONTH +
    r"(?:\s+\d{1,2}(?:st|nd|rd|th)?\b)?(?:,?\s+\d{4})?"
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


@dataclass
class Details:
    numbers: list[tuple[float, str, str, set[str], tuple[int, int]]]  # value, class, said, unit
    times: list[tuple[str, str, tuple[int, int]]]  # normalised, as said, span
    clauses: list[tuple[str, str, tuple[int, int]]]  # status, clause text, span
    hedged: str | None  # the hedging word
    asserted: str | None
    words: set[str]


def details(text: str) -> Details:
    """What a sentence says that another may contradict: its figures, times, done-or-planned
    clauses and hedging or asserting words, and its content words."""
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
        unit = content_words(" ".join(text[m.end():].split()[:3]))
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
    return Details(numbers, times, clauses, hedge.group().lower() if hedge else None,
                    claim.group().lower() if claim and not hedge else None,
                    content_words(text) - content_words(" ".join(t for _, t, _ in times)))


def names(text: str) -> set[str]:
    """Proper names, case-folded: capitalised words that do not start the sentence."""
    words = re.findall(r"[\w-]+", unpossess(text))
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


def _compare(i: int, j: int, a: str, b: str, da: Details, db: Details,
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
                if (ca != cb and {"lower", "upper"} & {ca, cb}
                        and not _within(sa, ca, sb, cb)):
                    edges.append(_Edge("figures", f"{va:g}", i, j, {
                        i: (ca, sa, _excerpt(a, spa)), j: (cb, sb, _excerpt(b, spb))}, sim))
            elif (ua & ub and sim >= SAME_EVENT_COSINE and va not in values_b
                  and vb not in values_a and va >= 10 and vb >= 10
                  and _disjoint(_bounds(va, ca), _bounds(vb, cb))):
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
        (ka, sa, spa), (kb, sb, spb) = times_a[0], times_b[0]
        if ({t for t, _, _ in times_a}.isdisjoint(t for t, _, _ in times_b)
                and _times_disagree(ka, kb)):
            edges.append(_Edge("timing", " ".join(sorted(anchors)) or "event", i, j, {
                i: (ka, sa, _excerpt(a, spa)), j: (kb, sb, _excerpt(b, spb))}, sim))
    # status: one clause says it happened, the other that it is only planned
    for sa, pa, _ in da.clauses:
        for sb, pb, _ in db.clauses:
            common = names(pa) & names(pb)
            if (sa != sb and common and sim >= SAME_EVENT_COSINE
                    and len(content_words(pa) & content_words(pb)) >= 2):
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


_INCLUSIVE = re.compile(r"(?:at least|up to|at most)\s", re.I)
# "about 18" may be 17.5 or 18.5 but not 20: how far a rounded figure reaches either side
_APPROX = 0.05


def _bounds(value: float, cls: str) -> tuple[float, float]:
    """The values a figure as qualified allows: "over 30" allows 34, "about 18" not 20."""
    if cls == "lower":
        return value, math.inf
    if cls == "upper":
        return 0.0, value
    if cls == "approx":
        return value * (1 - _APPROX), value * (1 + _APPROX)
    return value, value


def _within(said_a: str, cls_a: str, said_b: str, cls_b: str) -> bool:
    """One side gives the exact figure the other gives as an inclusive bound: "13" and "at
    least 13" agree ("roughly 600" and "over 600" do not: one may be 590)."""
    return ((cls_a == "exact" and _INCLUSIVE.match(said_b) is not None)
            or (cls_b == "exact" and _INCLUSIVE.match(said_a) is not None))


def _disjoint(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[1] < b[0] or b[1] < a[0]


def _when(time: str) -> tuple[str, tuple]:
    """A time as said, by kind: a date (its year, month and day, each None where unsaid), a
    weekday, a start ("since the invasion began"), or a span of a week, a month, a season...
    ("last week", "earlier this month")."""
    words = re.findall(r"\w+", time.lower())
    month = next((_MONTHS.index(w) + 1 for w in words if w in _MONTHS), None)
    year = next((int(w) for w in words if re.fullmatch(r"(?:19|20)\d{2}", w)), None)
    if month is None and year is None:
        if any(w.endswith("day") for w in words):
            return "weekday", (time,)
        if words[0] == "since":
            return "since", (time,)
        # "last week", "earlier this month": spans of one length compare, of two lengths not
        return f"span of a {words[-1]}", (time,)
    day = next((int(re.match(r"\d+", w).group()) for w in words
                if re.fullmatch(r"\d{1,2}(?:st|nd|rd|th)?", w)), None)
    return "date", (year, month, day)


def _times_disagree(a: str, b: str) -> bool:
    """Two times that cannot both be right: dates that differ in a part both give ("in April"
    and "April 8, 2010" agree), or two weekdays, two starts or two spans of one length that
    differ ("last week" and "this week"). A date and "last week", or "last week" and "earlier
    this month", are not compared: they may well be two events, or agree."""
    (kind_a, when_a), (kind_b, when_b) = _when(a), _when(b)
    if kind_a != kind_b:
        return False
    if kind_a == "date":
        return any(x is not None and y is not None and x != y for x, y in zip(when_a, when_b))
    return when_a != when_b


def _pairs(pool: list, vecs: np.ndarray, idx: list[int], block: int = 512):
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


def find_conflicts(pool: list,
                   vecs: np.ndarray) -> tuple[list[Conflict], set[tuple[int, int]]]:
    """The conflicts, and the pairs of sentences found in dispute."""
    facts = {i: details(s.text) for i, s in enumerate(pool)}
    idx = [i for i, d in facts.items()
           if d.numbers or d.times or d.clauses or d.hedged or d.asserted]
    edges: list[_Edge] = []
    for i, j, sim in _pairs(pool, vecs, idx):
        edges += _compare(i, j, pool[i].text, pool[j].text, facts[i], facts[j], sim)
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


def _conflict(pool: list, parts: list[tuple[str, list[_Edge]]]):
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
            cites.append(pool[k].citation(len(cites) + 1))
            ns.append(len(cites))
        who = ", ".join(dict.fromkeys(Path(pool[k].source).name for k in members))
        claims = []
        for aspect, (key, shown, excerpt) in said[members[0]].items():
            claim = _SAYS[key] if aspect in ("status", "certainty") else f"“{shown}”"
            claims.append(f"{claim} (“{excerpt}”)" if excerpt else claim)
        what = ", ".join(claims)
        side_texts.append(f"{who}: {what} {''.join(f'[{n}]' for n in ns)}")
        side_list.append((what, tuple(ns)))
    aspects = list(dict.fromkeys(a for a, _ in parts))  # two figures disputed: one aspect
    text = (f"Sources differ on {' and '.join(_ASPECTS[a] for a in aspects)}: "
            + "; ".join(side_texts) + ".")
    conflict = Conflict(text=text, citations=tuple(cites),
                        n_sources=len({c.source for c in cites}),
                        aspect=" and ".join(aspects), sides=tuple(side_list))
    return best + 0.1 * len(aspects), conflict
