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
class Answer:
    question: str
    answer: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    timings: dict[str, float]
    # reader: the reader's span (or, style "quote", its sentence); extractive: the sentence
    # quoted in place of the span (why: verification["why_quoted"]); briefing; abstained
    method: str = "reader"
    verification: dict = field(default_factory=dict)


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
