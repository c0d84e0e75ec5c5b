"""From retrieved passages to the few sentences that answer a question, and the checks an
answer must pass against them. The model only ever chooses among these sentences."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.chunking import split_sentences
from rag.embedder import Embedder
from rag.retrieve import STOPWORDS
from rag.types import Citation, Hit

LEXICAL_WEIGHT = 0.35
MAX_SENTENCE_CHARS = 600


@dataclass(frozen=True)
class Sentence:
    source: str
    chunk_id: str
    start: int
    end: int
    text: str
    similarity: float
    overlap: float
    score: float
    also_in: tuple[str, ...] = ()

    def citation(self, n: int) -> Citation:
        return Citation(n=n, source=self.source, chunk_id=self.chunk_id, text=self.text,
                        start=self.start, end=self.end)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[\w'’]+", text.lower()) if w not in STOPWORDS}


def candidate_sentences(hits: list[Hit]) -> list[tuple[Hit, int, int, str]]:
    seen: set[tuple[str, int, int]] = set()
    out = []
    for hit in hits:
        c = hit.chunk
        for a, b in split_sentences(c.text):
            start, end = c.start + a, c.start + b
            text = c.text[a:b]
            key = (c.source, start, end)
            if key in seen or len(text) > MAX_SENTENCE_CHARS or len(text) < 3:
                continue
            seen.add(key)
            out.append((hit, start, end, text))
    return out


def rank_sentences(question: str, hits: list[Hit], embedder: Embedder) -> list[Sentence]:
    candidates = candidate_sentences(hits)
    if not candidates:
        return []
    vecs = embedder.embed([question] + [t for *_, t in candidates])
    sims = vecs[1:] @ vecs[0]
    q_words = content_words(question)
    ranked = []
    for (hit, start, end, text), sim in zip(candidates, sims):
        overlap = len(q_words & content_words(text)) / len(q_words) if q_words else 0.0
        ranked.append(Sentence(hit.chunk.source, hit.chunk.chunk_id, start, end, text,
                               float(sim), overlap, float(sim) + LEXICAL_WEIGHT * overlap,
                               hit.also_in))
    ranked.sort(key=lambda s: -s.score)
    return ranked


# -- the answer's shape, from the question ---------------------------------------------------

_NUMBER_WORDS = r"(?:\d|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|" \
                r"dozen|hundred|thousand|million|billion|several|few)"
_MONTHS = r"(?:january|february|march|april|may|june|july|august|september|october|" \
          r"november|december|monday|tuesday|wednesday|thursday|friday|saturday|sunday|" \
          r"year|month|week|day|today|yesterday|tomorrow|century|decade|spring|summer|" \
          r"autumn|fall|winter|since|ago|early|late|soon|recent)"


def answer_kind(question: str) -> str:
    q = question.lower().strip()
    if re.match(r"(how (many|much)|what (number|percentage|amount))\b", q):
        return "number"
    if re.match(r"(when|what (year|date|day|month|time)|in what year|which year)\b", q):
        return "time"
    if re.match(r"(who|whom|whose)\b", q):
        return "person"
    return "other"


def fits_kind(span: str, kind: str) -> bool:
    s = span.lower()
    if kind == "number":
        return re.search(r"\b" + _NUMBER_WORDS, s) is not None or re.search(r"\d", s) is not None
    if kind == "time":
        return re.search(r"\d", s) is not None or re.search(r"\b" + _MONTHS, s) is not None
    if kind == "person":
        return re.search(r"\b[A-Z][a-z]+", span) is not None or \
            re.search(r"\b(officials?|leaders?|president|minister|government|media|"
                      r"intelligence|agency|experts?)\b", s) is not None
    return True


def adds_information(span: str, question: str) -> bool:
    """An answer must say something the question did not already say."""
    return bool(content_words(span) - content_words(question))


# -- constrained generation ------------------------------------------------------------------

def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\r", "\\r").replace("\t", "\\t") + '"'


def span_grammar(sentences: list[str], max_words: int = 24) -> str:
    """A GBNF grammar whose every output is a run of whole words copied from one sentence.

    Rule s{i}w{j} emits word j of sentence i and may continue with word j+1 (with the exact
    white space between them), so the model picks where to start and where to stop."""
    rules = []
    starts = []
    for i, sentence in enumerate(sentences):
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]
        for j, (a, b) in enumerate(words):
            word = sentence[a:b]
            if j + 1 < len(words):
                gap = sentence[b:words[j + 1][0]]
                body = f"{_gbnf_literal(word)} ({_gbnf_literal(gap)} s{i}w{j + 1})?"
            else:
                body = _gbnf_literal(word)
            rules.append(f"s{i}w{j} ::= {body}")
            starts.append(f"s{i}w{j}")
    root = "root ::= " + " | ".join(starts)
    return "\n".join([root, *rules]) + "\n"


def trim_span(span: str) -> str:
    """Loosen a copied span to a tidy answer: no dangling punctuation or quotes."""
    return span.strip().strip(",;:").strip()


def locate(span: str, sentences: list[Sentence]) -> int | None:
    """Index of the first sentence that contains span word for word."""
    for i, s in enumerate(sentences):
        if span and span in s.text:
            return i
    return None
