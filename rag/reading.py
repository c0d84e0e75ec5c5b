"""The reader's answer path, and the requests that are not questions.

rag.answer.Answerer hands each question here: the learned reader (rag.reader) scores every span
of every retrieved passage against the passage's "no answer here" score, and a logistic model
over that reading (`Answerability`, fitted by `make train` on held-out even SQuAD questions
asked over the passages retrieved for them and over passages that do not hold their answer, and
on a set of questions as people type them over other documents, bench/calibration/) gives the
chance that the best span answers. Below its calibrated threshold rag abstains and
says so. The support check reads the question against the cited sentence alone: the span is
printed only when, there too, it beats "no answer" by the calibrated support margin; otherwise
the sentence is quoted, and the JSON says so and why. Numbers: docs/answering.md.

Instructions ("Summarize ...", "Tell me about ...", "What do the sources disagree on?") are not
questions: they are answered by the briefing machinery (rag.brief) on
their topic (`instruction`, `briefing`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rag.chunking import split_sentences
from rag.config import Settings
from rag.embedder import Embedder
from rag.errors import RagError
from rag.reader import READER_BASE, WEIGHTS, Reader, Span, load_base
from rag.registry import resolve_embedding
from rag.text import search_words
from rag.types import Answer, Citation, Hit, Verification

ABSTAIN_TEXT = "The indexed documents do not answer this question."
CALIBRATION = WEIGHTS.with_name("reader.json")
# A briefing given for an instruction: at most this many points, and of the conflicts found
# the first few (all of them when asked where the sources disagree, with fewer points)
BRIEF_POINTS = 5
BRIEF_CONFLICTS = 2
BRIEF_CONTEXT = 2

# Auxiliary verbs that open a yes/no question ("Did Debian ...", "Is it ...").
_YESNO = re.compile(r"^(?:is|are|was|were|do|does|did|has|have|had|can|could|will|would|"
                    r"should|shall|may|might|must)\b", re.I)
# A question whose answer is a reason: the sentence that gives it, not a few words of it
_WHY = re.compile(r"^why\b", re.I)
# "the sources", "the two accounts": what a question about agreement asks about
_SOURCES = (r"(?:the\s+)?(?:\w+\s+){0,2}(?:sources|documents|articles|reports|accounts|texts|"
            r"chronologies|outlets)")
_ABOUT = r"(?:\s+(?:on|about|over|regarding|as to|in))*\s*"
# Requests for a briefing rather than a fact. Each pattern's "topic" group is what it is about.
_INSTRUCTION = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+)?(?:"
    r"(?:summari[sz]e|sum up|recap|outline|overview)(?:\s+(?:for me|briefly))?\s*:?\s*"
    r"(?P<topic1>.*)"
    r"|(?:give|write|make)\s+(?:me\s+)?(?:a|an)\s+(?:short\s+|brief\s+|quick\s+)?"
    r"(?:summary|overview|briefing|recap|rundown)(?:\s+(?:of|on|about))?\s*(?P<topic2>.*)"
    r"|tell\s+me\s+(?:more\s+|everything\s+|all\s+)?(?:about|of)\s+(?P<topic3>.*)"
    r"|brief\s+me(?:\s+(?:on|about))?\s*(?P<topic4>.*)"
    r"|(?:explain|describe)(?:\s+(?:to me|for me|briefly))?\s+(?P<topic7>.+)"
    r"|(?:what|where)\s+(?:do|does)\s+" + _SOURCES + r"\s+(?:disagree|differ|conflict)"
    + _ABOUT + r"(?P<topic5>.*)"
    r"|(?:do|does|did)\s+" + _SOURCES + r"\s+(?:agree|disagree|differ|conflict)"
    + _ABOUT + r"(?P<topic6>.*)"
    r")$", re.I | re.S)
_MARKER = re.compile(r"\[(\d+)\]")

# A passage that talks to a model ("ignore all previous instructions", "System: ...") is
# evidence of what a document says, never a voice to answer in: it is quoted whole.
_TALKS_TO_A_MODEL = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.]{0,40}\b(previous|prior|above|earlier|all|"
    r"any)\b[^.]{0,20}\b(instructions?|prompts?|rules|directions)\b"
    r"|(^|[\s.:;!?])(system|assistant|developer)\s*:"
    r"|\byou are now\b|\b(system|developer) (prompt|message)\b", re.I)


def reads_as_instructions(text: str) -> bool:
    return _TALKS_TO_A_MODEL.search(text) is not None


@dataclass(frozen=True)
class Instruction:
    topic: str | None  # None: the whole index
    conflicts_first: bool  # asked where the sources disagree


def instruction(question: str) -> Instruction | None:
    """The briefing a request asks for, or None when it is a question."""
    m = _INSTRUCTION.match(question.strip())
    if m is None:
        return None
    topic = next((g for g in m.groups() if g), "") or ""
    topic = re.sub(r"^(?:the\s+)?(?:documents?|sources|articles|index)\b", "", topic.strip(),
                   flags=re.I)
    topic = re.sub(r"\s*(?:for me|please)?\s*[?.!]*$", "", topic.strip(), flags=re.I).strip()
    return Instruction(topic or None, m.lastgroup in ("topic5", "topic6"))


# What the answerability model reads of a question's retrieved passages, as the reader saw them
FEATURES = ("margin", "span_score", "null", "runner_up", "mean_margin", "agreeing",
            "similarity", "rank", "overlap", "span_tokens", "sentence_margin")
_NONE = -20.0  # a margin where there is none to read (a sentence the reader finds nothing in)


@dataclass(frozen=True)
class Answerability:
    """A logistic model over FEATURES: the chance that the reader's best span answers the
    question, fitted by `make train` on held-out even SQuAD questions asked over the passages
    rag retrieves for them and over passages that do not hold their answer, and on the natural
    calibration set (bench/calibration/)."""
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float  # answer at or above this chance

    def chance(self, features: dict[str, float]) -> float:
        z = self.bias + sum(w * (features[f] - m) / s for f, m, s, w in
                            zip(FEATURES, self.mean, self.scale, self.weights))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    @classmethod
    def from_json(cls, data: dict) -> Answerability:
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"features {data['features']} are not {list(FEATURES)}")
        return cls(tuple(map(float, data["mean"])), tuple(map(float, data["scale"])),
                   tuple(map(float, data["weights"])), float(data["bias"]),
                   float(data["threshold"]))


def features(question: str, hits: list[Hit], spans: list[list[Span]], best: Span,
             sentence: str, sentence_margin: float | None) -> dict[str, float]:
    """FEATURES of the reader's reading of `hits` (spans per passage, best first), of its best
    span and of the sentence that holds it."""
    best_of = [per[0] for per in spans if per]
    answer = fold(hits[best.passage].chunk.text[best.start:best.end])
    others = sorted((s.margin for s in best_of if s.passage != best.passage), reverse=True)
    asked = set(search_words(question))
    said = set(search_words(sentence))
    return {"margin": best.margin, "span_score": best.score, "null": best.null,
            "runner_up": others[0] if others else _NONE,
            "mean_margin": sum(s.margin for s in best_of) / len(best_of),
            "agreeing": float(sum(fold(hits[s.passage].chunk.text[s.start:s.end]) == answer
                                  for s in best_of) - 1),
            "similarity": hits[best.passage].similarity, "rank": float(best.passage),
            "overlap": len(asked & said) / max(1, len(asked)),
            "span_tokens": math.log1p(len(answer.split())),
            "sentence_margin": _NONE if sentence_margin is None else sentence_margin}


@dataclass(frozen=True)
class Reading:
    """What the reader made of a question's passages: its best span, the sentence around it
    (offsets into that span's passage), the span's margin read in that sentence alone (None:
    no span found there overlaps it) and the FEATURES the answerability model reads."""
    best: Span
    sentence: tuple[int, int]
    support: float | None
    features: dict[str, float]


def read_passages(reader: Reader, question: str, hits: list[Hit]) -> Reading | None:
    """The reader over `hits`, as the answer path and its calibration (`make train`) both read
    them; None when no passage has a span."""
    spans = reader.read(question, [h.chunk.text for h in hits])
    best = max((s for per in spans for s in per), key=lambda s: s.margin, default=None)
    if best is None:
        return None
    text = hits[best.passage].chunk.text
    a, b = _sentence_around(text, best.start, best.end)
    alone = reader.read(question, [text[a:b]], top=5)[0]
    support = max((s.margin for s in alone if s.start < best.end - a and best.start - a < s.end),
                  default=None)
    return Reading(best, (a, b), support,
                   features(question, hits, spans, best, text[a:b], support))


def fold(text: str) -> str:
    """Lower case, every run of characters that are not letters or digits one space."""
    return " ".join("".join(c.lower() if c.isalnum() else " " for c in text).split())


@dataclass(frozen=True)
class Calibration:
    """The reader's margins (span score less no-answer score) and its answerability model, set
    by `make train`."""
    answer_margin: float  # with no answerability model: some span must beat "no answer" by it
    support_margin: float  # the span, read in its sentence alone, to be printed as the answer
    answerability: Answerability | None = None

    @classmethod
    def load(cls, path: Path = CALIBRATION) -> Calibration:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            model = data.get("answerability")
            return cls(float(data["answer_margin"]), float(data["support_margin"]),
                       Answerability.from_json(model) if model else None)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RagError(f"{path}: the reader's calibration is unreadable ({e}); "
                           "`make train` writes it") from e


class ReaderPath:
    """The reader's answer for an Answerer's question: loaded once, on first use."""

    def __init__(self, settings: Settings, embedder: Embedder,
                 calibration: Calibration | None = None):
        self.settings = settings
        self.embedder = embedder
        self.calibration = calibration or Calibration.load()
        self._reader: Reader | None = None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            spec = resolve_embedding(READER_BASE, self.settings)
            same = spec.path == self.embedder.path and self.embedder.own_forward
            self._reader = Reader(self.embedder.minilm() if same else load_base(spec.path))
        return self._reader

    def answer(self, question: str, hits: list[Hit], t0: float, t1: float) -> Answer:
        cal = self.calibration
        reading = read_passages(self.reader, question, hits)
        if reading is None:
            return abstention(question, hits, Verification(
                reason="no retrieved passage answers it"), t0, t1)
        best, support, (a, b) = reading.best, reading.support, reading.sentence
        hit = hits[best.passage]
        span_text = hit.chunk.text[best.start:best.end]
        seen = Verification(reader_margin=round(best.margin, 3), best_span=span_text,
                            sentence_margin=None if support is None else round(support, 3))
        if cal.answerability is not None:
            chance = cal.answerability.chance(reading.features)
            seen = replace(seen, answerable_chance=round(chance, 3),
                           answerable_threshold=cal.answerability.threshold)
            answers = chance >= cal.answerability.threshold
        else:
            seen = replace(seen, answer_margin=cal.answer_margin)
            answers = best.margin >= cal.answer_margin
        if not answers:
            return abstention(question, hits, replace(
                seen, reason="no retrieved passage answers it"), t0, t1)
        citation = Citation(n=1, source=hit.chunk.source, chunk_id=hit.chunk.chunk_id,
                            text=hit.chunk.text[a:b], start=hit.chunk.start + a,
                            end=hit.chunk.start + b)
        supported = support is not None and support >= cal.support_margin
        why_quoted = None
        if reads_as_instructions(hit.chunk.text):
            why_quoted = ("the passage reads as instructions to a model: it is quoted, never "
                          "answered from")
        elif _YESNO.match(question):
            why_quoted = "a yes/no question is answered by quoting the sentence"
        elif _WHY.match(question):
            why_quoted = "a why question is answered by the sentence that gives the reason"
        elif not supported:
            why_quoted = ("the cited sentence alone does not support the span as the answer: "
                          "the sentence is quoted instead")
        if why_quoted is not None:
            text, method = citation.text, "extractive"
        elif self.settings.answer_style == "quote":
            text, method = citation.text, "reader"
        else:
            text, method = span_text, "reader"
        verification = replace(seen, span=span_text, support_margin=cal.support_margin,
                               supported_by_sentence=supported, why_quoted=why_quoted,
                               sources_agreeing=1 + len(hit.also_in),
                               also_in=tuple(hit.also_in))
        return Answer(question=question, answer=f"{text} [1]", abstained=False,
                      citations=(citation,), hits=tuple(hits),
                      timings=_timings(t0, t1, time.perf_counter()), method=method,
                      verification=verification)


def briefing(settings: Settings, question: str, wanted: Instruction) -> Answer:
    """An instruction answered by a briefing on its topic: its points and conflicts as lines,
    each citing its sentences."""
    from rag import brief

    t0 = time.perf_counter()
    b = brief.build(settings, wanted.topic, max_points=BRIEF_POINTS)
    t1 = time.perf_counter()
    lines, citations = [], []
    # asked where the sources disagree: every conflict, then a few points for context;
    # asked for a summary: the points, then the conflicts that matter most
    groups = [*b.conflicts, *b.points[:BRIEF_CONTEXT]] if wanted.conflicts_first else \
        [*b.points, *b.conflicts[:BRIEF_CONFLICTS]]
    for point in groups:
        # each point numbers its citations from 1: renumbered to follow the points before
        offset = len(citations)
        citations += [Citation(n=offset + c.n, source=c.source, chunk_id=c.chunk_id,
                               text=c.text, start=c.start, end=c.end, page=c.page)
                      for c in point.citations]
        lines.append("- " + _MARKER.sub(lambda m, o=offset: f"[{int(m.group(1)) + o}]",
                                        point.text))
    verification = Verification(answerer="briefing", topic=wanted.topic,
                                points=len(b.points), conflicts=len(b.conflicts))
    if not lines:
        return abstention(question, [], replace(
            verification, reason="no document speaks of " + (wanted.topic or "anything")), t0, t1)
    if wanted.conflicts_first and not b.conflicts:
        lines.insert(0, "The sources do not disagree on this; what they say:")
    return Answer(question=question, answer="\n".join(lines), abstained=False,
                  citations=tuple(citations), hits=(),
                  timings=_timings(t0, t1, time.perf_counter()), method="briefing",
                  verification=verification)


def abstention(question: str, hits: list[Hit], verification: Verification, t0: float,
               t1: float) -> Answer:
    text = ABSTAIN_TEXT
    if verification.reason:
        text = f"{ABSTAIN_TEXT[:-1]}: {verification.reason}."
    return Answer(question=question, answer=text, abstained=True, citations=(),
                  hits=tuple(hits), timings=_timings(t0, t1, time.perf_counter()),
                  method="abstained", verification=verification)


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence(s) of `text` that hold [start, end)."""
    spans = split_sentences(text) or [(0, len(text))]
    a = next((s for s, e in spans if s <= start < e), spans[0][0])
    b = next((e for s, e in spans if s < end <= e), spans[-1][1])
    return min(a, start), max(b, end)


def _timings(t0: float, t1: float, t2: float) -> dict[str, float]:
    return {"retrieve_s": round(t1 - t0, 4), "generate_s": round(t2 - t1, 4),
            "total_s": round(t2 - t0, 4)}
