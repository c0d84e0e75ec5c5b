"""The values that flow through the pipeline. All frozen: a stage returns new ones."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    source: str  # the path as given to ingest, resolved; "file.jsonl#id" for a record
    title: str
    text: str  # the text as extracted: every offset and citation refers to it
    sha256: str
    file: str = ""  # the file it was read from, when that is not the source itself
    pages: tuple[int, ...] = ()  # offsets in text where pages 1, 2, ... begin (PDF)
    url: str = ""
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def origin(self) -> str:
        return self.file or self.source

    def page_at(self, offset: int) -> int | None:
        """The page holding text[offset], or None for a document without pages."""
        if not self.pages:
            return None
        return max(1, bisect_right(self.pages, offset))


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    start: int  # character offsets into the document text
    end: int
    text: str  # exactly document.text[start:end]
    n_tokens: int
    page: int | None = None  # the page it lies on, for paged documents (never spans two)


# Chunks of paged documents name their page in their id: "<hash>-p<page>-<seq>".
_PAGED_CHUNK_ID = re.compile(r"^[0-9a-f]+-p(\d+)-")


def page_of_chunk_id(chunk_id: str) -> int | None:
    m = _PAGED_CHUNK_ID.match(chunk_id)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Hit:
    rank: int
    chunk: Chunk
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None
    similarity: float = 0.0  # cosine between question and passage
    also_in: tuple[str, ...] = ()  # other sources carrying a near-duplicate passage


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    chunk_id: str
    text: str  # verbatim from the source, at [start, end)
    start: int
    end: int
    page: int | None = None  # None: read from the chunk id when the document has pages

    def __post_init__(self) -> None:
        if self.page is None:
            object.__setattr__(self, "page", page_of_chunk_id(self.chunk_id))

    def as_json(self) -> dict:
        out = {
            "n": self.n,
            "source": self.source,
            "chunk_id": self.chunk_id,
            "text": self.text,
            "start": self.start,
            "end": self.end,
        }
        if self.page is not None:
            out["page"] = self.page
        return out


@dataclass(frozen=True)
class Verification:
    """Why an answer is what it is: `--json`'s "verification" (fields left unset are left out).
    Margins are the reader's: a span's score less its window's "no answer here" score."""
    answerer: str = "reader"  # "reader", or "briefing" for a request that is not a question
    reason: str | None = None  # why rag abstained, in words
    reader_margin: float | None = None  # the best span's margin
    best_span: str | None = None  # the best span, answered or not
    sentence_margin: float | None = None  # the span's margin in its sentence read alone
    answerable_chance: float | None = None  # the answerability model's chance for the span
    answerable_threshold: float | None = None  # ... at or above which rag answers
    answer_margin: float | None = None  # with no answerability model: the margin to answer
    span: str | None = None  # the span the answer is, or is quoted around
    support_margin: float | None = None  # the sentence margin a printed span must reach
    supported_by_sentence: bool | None = None
    why_quoted: str | None = None  # why the sentence is printed in place of the span
    sources_agreeing: int | None = None  # sources that carry the cited passage
    also_in: tuple[str, ...] = ()  # the other sources that carry it
    topic: str | None = None  # a briefing's topic (None: the whole index)
    points: int | None = None  # a briefing's points and conflicts
    conflicts: int | None = None

    def as_json(self) -> dict:
        out: dict = {"answerer": self.answerer}
        if self.answerer == "briefing":
            out.update(instruction=True, topic=self.topic, points=self.points,
                       conflicts=self.conflicts)
        for name in ("reason", "reader_margin", "best_span", "sentence_margin",
                     "answerable_chance", "answerable_threshold", "answer_margin", "span",
                     "support_margin"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.reader_margin is not None and self.sentence_margin is None:
            out["sentence_margin"] = None  # read, and no span found in the sentence alone
        if self.supported_by_sentence is not None:
            out["checks"] = {"supported_by_sentence": self.supported_by_sentence}
        for name in ("why_quoted", "sources_agreeing"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.also_in:
            out["also_in"] = list(self.also_in)
        return out


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    timings: dict[str, float]
    # reader: the reader's span (or, style "quote", its sentence); extractive: the sentence
    # quoted in place of the span (why: verification.why_quoted); briefing; abstained
    method: str = "reader"
    verification: Verification = field(default_factory=Verification)


@dataclass(frozen=True)
class Point:
    text: str
    citations: tuple[Citation, ...]
    n_sources: int = 1


@dataclass(frozen=True)
class Briefing:
    topic: str | None
    points: tuple[Point, ...]
    conflicts: tuple[Point, ...]
    sources: tuple[tuple[str, str], ...]  # (source, title)
