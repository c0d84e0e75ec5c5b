"""The ask job: question -> retrieved passages -> evidence sentences -> a short answer the
model copies from one of them -> checks -> an Answer whose every [n] quotes its source.

The model never writes free text here: a grammar lets it only choose a run of words from the
evidence, so what it says is in the cited passage by construction. The checks then ask whether
that run answers the question at all (right kind of answer, new information); when it does not,
the best evidence sentence is quoted instead, and when the evidence is too weak we abstain.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from rag import evidence as ev
from rag.config import Settings
from rag.embedder import Embedder
from rag.ingest import open_store
from rag.llm import LLM, get_llm
from rag.registry import resolve_llm
from rag.retrieve import Retriever
from rag.store import Store
from rag.types import Answer, Hit

ABSTAIN_TEXT = "The indexed documents do not answer this question."


@dataclass(frozen=True)
class Thresholds:
    # Calibrated on seeds/qa.jsonl and SQuAD even-numbered questions (bench/calibrate.py).
    min_similarity: float = 0.30  # best evidence sentence vs question, cosine
    min_score: float = 0.45  # cosine + lexical overlap bonus
    evidence_sentences: int = 3


class Answerer:
    """Holds the index and the models for many questions: each loads once."""

    def __init__(self, settings: Settings, model: str | None = None,
                 thresholds: Thresholds | None = None, retrieval_mode: str = "hybrid"):
        self.settings = settings
        self.model_name = model or settings.model
        self.thresholds = thresholds or Thresholds()
        self.store: Store
        self.embedder: Embedder
        self.store, self.embedder = open_store(settings)
        self.retriever = Retriever(self.store, self.embedder, retrieval_mode)
        self._llm: LLM | None = None

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = get_llm(resolve_llm(self.model_name, self.settings), self.settings)
        return self._llm

    def close(self) -> None:
        self.store.close()

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        return self.retriever.search(question, k or self.settings.k)

    def ask(self, question: str, k: int | None = None) -> Answer:
        t0 = time.perf_counter()
        question = question.strip()
        hits = self.retrieve(question, k)
        sentences = ev.rank_sentences(question, hits, self.embedder)
        t1 = time.perf_counter()
        kind = ev.answer_kind(question)
        best = sentences[0] if sentences else None
        verification: dict = {"answer_kind": kind}
        if best is not None:
            verification.update(best_similarity=round(best.similarity, 4),
                                best_score=round(best.score, 4))
        th = self.thresholds
        if best is None or best.similarity < th.min_similarity or best.score < th.min_score:
            verification["reason"] = "no passage is close enough to the question"
            return self._abstain(question, hits, verification, t0, t1)
        # only sentences that could hold this kind of answer are offered to the model
        offered = [s for s in sentences if ev.fits_kind(s.text, kind)][:th.evidence_sentences]
        if not offered:
            verification["reason"] = f"no retrieved sentence holds a {kind}"
            return self._abstain(question, hits, verification, t0, t1)

        span, gen_info = self._choose_span(question, offered)
        verification.update(gen_info)
        idx = ev.locate(span, offered)
        checks = {
            "copied_from_passage": idx is not None,
            "fits_question": ev.fits_kind(span, kind),
            "adds_information": ev.adds_information(span, question),
        }
        verification["checks"] = checks
        if all(checks.values()):
            chosen, text, method = offered[idx], span, "generated"
        else:
            verification["replaced"] = "the model's phrase failed a check: quoting the evidence"
            chosen, text, method = offered[0], offered[0].text, "extractive"
        citation = chosen.citation(1)
        answer = f"{text} [1]"
        verification["sources_agreeing"] = 1 + len(chosen.also_in)
        t2 = time.perf_counter()
        return Answer(question=question, answer=answer, abstained=False,
                      citations=(citation,), hits=tuple(hits),
                      timings=_timings(t0, t1, t2), method=method, verification=verification)

    def _choose_span(self, question: str, offered: list[ev.Sentence]) -> tuple[str, dict]:
        passages = "\n".join(f"[{i + 1}] {s.text}" for i, s in enumerate(offered))
        gen = self.llm.generate("answer", {"passages": passages, "question": question},
                                max_tokens=self.settings.max_answer_tokens,
                                grammar=ev.span_grammar([s.text for s in offered]))
        span = ev.trim_span(gen.text)
        # a run cut off by max_tokens may end inside a word: drop back to whole words
        if ev.locate(span, offered) is None:
            words = span.split()
            while words and ev.locate(" ".join(words), offered) is None:
                words.pop()
            span = " ".join(words)
        span = re.sub(r"(?<![A-Z])\.$", "", span).strip()
        return span, {"model": self.llm.name, "raw": gen.text,
                      "prompt_tokens": gen.prompt_tokens,
                      "completion_tokens": gen.completion_tokens}

    def _abstain(self, question: str, hits: list[Hit], verification: dict,
                 t0: float, t1: float) -> Answer:
        return Answer(question=question, answer=ABSTAIN_TEXT, abstained=True, citations=(),
                      hits=tuple(hits), timings=_timings(t0, t1, time.perf_counter()),
                      method="abstained", verification=verification)


def _timings(t0: float, t1: float, t2: float) -> dict[str, float]:
    return {"retrieve_s": round(t1 - t0, 4), "generate_s": round(t2 - t1, 4),
            "total_s": round(t2 - t0, 4)}


def answer_json(a: Answer) -> dict:
    return {
        "question": a.question,
        "answer": a.answer,
        "abstained": a.abstained,
        "citations": [c.as_json() for c in a.citations],
        "timings": a.timings,
        "method": a.method,
        "verification": a.verification,
    }
