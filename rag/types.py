"""The values that flow through the pipeline. All frozen: a stage returns new ones."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    source: str  # the path as given to ingest, resolved
    title: str
    text: str
    sha256: str


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    start: int  # character offsets into the document text
    end: int
    text: str  # exactly document.text[start:end]
    n_tokens: int


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

    def as_json(self) -> dict:
        return {
            "n": self.n,
            "source": self.source,
            "chunk_id": self.chunk_id,
            "text": self.text,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    timings: dict[str, float]
    method: str = "generated"  # generated | extractive | abstained
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
