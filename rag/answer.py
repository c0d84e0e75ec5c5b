"""The ask job: question -> retrieved passages -> the learned reader's answer (rag.reading):
its best span, the chance that the span answers, and its sentence's support -> an Answer whose
[n] quotes its source, or an abstention that says why.

Requests that are not questions ("Summarize ...", "What do the sources disagree on?") get a
cited briefing on their topic (rag.reading.briefing).

The GGUF model writes nothing an answer prints: measured as a chooser among the reader's spans
it lost to the reader's own choice (docs/answering.md). It writes briefings, and rewrites
follow-ups in chat when asked to (`--rewrite llm`)."""

from __future__ import annotations

import time

from rag.config import Settings
from rag.display import fit_question
from rag.embedder import Embedder
from rag.errors import RagError
from rag.llm import LLM, get_llm
from rag.reading import Instruction, ReaderPath, briefing, instruction
from rag.registry import resolve_llm
from rag.retrieve import Retriever
from rag.store import Store, open_store
from rag.types import Answer, Hit

# "short": the reader's span; "quote": the sentence that holds it
ANSWER_STYLES = ("quote", "short")


class Answerer:
    """Holds the index and the models for many questions: each loads once, on first use."""

    def __init__(self, settings: Settings, model: str | None = None,
                 retrieval_mode: str = "hybrid"):
        if settings.answer_style not in ANSWER_STYLES:
            raise RagError(f"answer style {settings.answer_style!r}: expected one of "
                           f"{', '.join(ANSWER_STYLES)}")
        self.settings = settings
        self.model_name = model or settings.model
        if self.model_name:  # a model asked for by name or path is found now, used or not
            resolve_llm(self.model_name, settings)
        self.store: Store
        self.embedder: Embedder
        self.store, self.embedder = open_store(settings)
        self.retriever = Retriever(self.store, self.embedder, retrieval_mode,
                                   late=settings.late_interaction, tuning=settings.retrieval)
        self._llm: LLM | None = None
        self._reading: ReaderPath | None = None

    @property
    def llm(self) -> LLM:
        """The GGUF model (briefings and chat's model rewrite)."""
        if self._llm is None:
            self._llm = get_llm(resolve_llm(self.model_name, self.settings), self.settings)
        return self._llm

    @property
    def reading(self) -> ReaderPath:
        """The learned reader's path."""
        if self._reading is None:
            self._reading = ReaderPath(self.settings, self.embedder)
        return self._reading

    def close(self) -> None:
        self.store.close()

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        return self.retriever.search(question, k or self.settings.k)

    def briefing(self, question: str, wanted: Instruction) -> Answer:
        return briefing(self.settings, question, wanted)

    def ask(self, question: str, k: int | None = None) -> Answer:
        t0 = time.perf_counter()
        question = fit_question(question.strip())  # chat and eval too, not only the CLI
        wanted = instruction(question)
        if wanted is not None:  # "Summarize ...": a request for a briefing, not a question
            return self.briefing(question, wanted)
        hits = self.retrieve(question, k)
        return self.reading.answer(question, hits, t0, time.perf_counter())


def answer_json(a: Answer) -> dict:
    return {
        "question": a.question,
        "answer": a.answer,
        "abstained": a.abstained,
        "citations": [c.as_json() for c in a.citations],
        "timings": a.timings,
        "method": a.method,
        "verification": a.verification.as_json(),
    }
