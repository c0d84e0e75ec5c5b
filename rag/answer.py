"""The ask job. By default the learned reader answers (rag.reading.ReaderPath): question ->
retrieved passages -> the reader's best span, its answerability and its sentence's support ->
an Answer whose [n] quotes its source, or an abstention that says why.

With RAG_READER=0 the evidence rules answer instead (kept to be measured against; on questions
nobody tuned for they are confidently wrong far more often, docs/answering.md): question ->
retrieved passages -> the evidence sentence -> a short answer the model phrases -> verification
against that sentence. The model only phrases. A grammar keeps it to 16 words on one line; what
it says is then located in the evidence sentence, and the answer printed is that run of the
sentence's own words (so it is in the cited passage by construction). When the model's words
are not in the evidence, the evidence sentence itself is quoted instead (of a long one, the
clauses that answer), and the JSON says so; with the "short" answer style the model instead
chooses the run of the evidence it finds likeliest. When no passage is close enough to the
question, none holds the kind of answer asked for, the question turns on a word no document
mentions, or the best sentence says the thing asked for was not disclosed, it abstains and says
why.

Requests that are not questions ("Summarize ...", "What do the sources disagree on?") get a
cited briefing on their topic (rag.reading.briefing) in either path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rag import evidence as ev
from rag.config import Settings
from rag.display import fit_question
from rag.embedder import Embedder
from rag.errors import RagError
from rag.llm import LLM, fit_to_context, get_llm
from rag.reading import Instruction, ReaderPath, briefing, instruction, reads_as_instructions
from rag.registry import resolve_llm
from rag.retrieve import Retriever
from rag.store import Store, open_store
from rag.types import Answer, Hit

# A run of more words than this is a sentence, not an answer: the evidence sentence is quoted.
MAX_PHRASE_WORDS = 6
# When the model writes this many words it wrote a sentence of its own rather than copying the
# answer, and which part of it answers is a guess: the evidence sentence is quoted instead.
# seeds/qa.jsonl: 36 -> 39 of 44 right; SQuAD even-80: answer contained 40% -> 49%, token F1
# 20.9 -> 18.3 (a quoted sentence holds the answer but is longer than it).
MAX_MODEL_WORDS = 12
ANSWER_STYLES = ("quote", "short")
# style "short": a run's log-probability as the answer less this times log(1 + the words
# between it and the nearest question word). SQuAD even-80, the model choosing for every
# question: 0 -> F1 36.1, 1 -> 40.7, 2 -> 40.7, 4 -> 35.5. Tried and lost there: dividing by
# the run's length (F1 18.9; by its square root 32.6), subtracting half the log-probability
# the run has for a question-less prompt (37.6; seeds 48% right against 57%), choosing only
# within the quoted clauses (31.9). Choosing only when the model's own words fail: F1 40.0.
NEAR_WEIGHT = 1.0
# and less this times log(1 + the words between it and the noun the question asks about
# ("What kind of missiles": "missiles"; rag.evidence.focus), when the sentence holds it.
FOCUS_WEIGHT = 1.0
# When some runs stand within this many words of that noun (or end on it), the answer is chosen
# among them only: the likeliest run is often the sentence's subject or a place far from what
# is asked ("United States" for "Who is the president of South Korea?" in "... President Lee
# Jae Myung concluded a summit ... with the United States"). SQuAD even-300, short style:
# F1 43.93 -> 44.62 (reach 0: 44.94), seeds/qa.jsonl 33 -> 38 of 44 right (reach 0: 37).
# With the rules after it (a quoted term whole, "besides X" answered from X's list, a bare noun
# with its qualifiers, "What long-range missiles capable of ..." asking about "missiles"):
# seeds 42 of 44, F1 44.84. Tried and lost there: dropping a run whose embedding is within
# cosine 0.7 / 0.8 of a phrase of the question ("Pyongyang" for "North Korea"): seeds 38 / 39,
# F1 44.17 / 44.13; a bonus for a run between question words ("grow [its nuclear weapons
# stockpile] as a deterrent"): F1 44.12-44.51, no seed gained; quoting the evidence when the
# model's best run leads the next by less than 1.0 in log-probability: F1 38.3 (quoted clauses
# score F1 14 where the chosen runs scored 44).
FOCUS_REACH = 1
# A quoted answer is the evidence sentence, or when that runs longer than this, the run of its
# clauses that speaks of what the question asks (rag.evidence.quote_window).
QUOTE_WORDS = 25

# A question about something a document says was not disclosed is answered by saying so, when
# one of this many best sentences says it (3 on seeds/qa.jsonl: no more unanswerable
# questions caught, two answerable ones lost to a sentence about other missiles).
WITHHELD_AMONG = 1
# A question leaving its preposition hanging is answered from the first of this many best
# fitting sentences that has something where the preposition points (rag.evidence.answer_slot).
SLOT_AMONG = 3
# A question asking for a name is answered from the first of this many best fitting sentences
# that gives one (rag.evidence.gives_name); when none does, rag abstains.
NAME_AMONG = 3

ABSTAIN_TEXT = "The indexed documents do not answer this question."


@dataclass(frozen=True)
class Thresholds:
    # Calibrated on seeds/qa.jsonl and SQuAD even-numbered questions (bench/squad.py).
    min_similarity: float = 0.30  # best evidence sentence vs question, cosine
    min_score: float = 0.45  # cosine + lexical overlap bonus
    # a question word no passage mentions, and no retrieved word comes this close to
    unseen_word_cosine: float = 0.60
    answer_tokens: int = 40


class Answerer:
    """Holds the index and the models for many questions: each loads once."""

    def __init__(self, settings: Settings, model: str | None = None,
                 thresholds: Thresholds | None = None, retrieval_mode: str = "hybrid"):
        if settings.answer_style not in ANSWER_STYLES:
            raise RagError(f"answer style {settings.answer_style!r}: expected one of "
                           f"{', '.join(ANSWER_STYLES)}")
        self.settings = settings
        self.model_name = model or settings.model
        if self.model_name:  # a model asked for by name or path is found now, used or not
            resolve_llm(self.model_name, settings)
        self.thresholds = thresholds or Thresholds()
        self.store: Store
        self.embedder: Embedder
        self.store, self.embedder = open_store(settings)
        self.retriever = Retriever(self.store, self.embedder, retrieval_mode,
                                   late=settings.late_interaction)
        self._llm: LLM | None = None
        self._reading: ReaderPath | None = None

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = get_llm(resolve_llm(self.model_name, self.settings), self.settings)
        return self._llm

    def close(self) -> None:
        self.store.close()

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        return self.retriever.search(question, k or self.settings.k)

    @property
    def reading(self) -> ReaderPath:
        """The learned reader's path (the default), loaded on first use."""
        if self._reading is None:
            self._reading = ReaderPath(self.settings, self.embedder)
        return self._reading

    def briefing(self, question: str, wanted: Instruction) -> Answer:
        return briefing(self.settings, question, wanted)

    def ask(self, question: str, k: int | None = None, *,
            on_token: Callable[[str], None] | None = None) -> Answer:
        t0 = time.perf_counter()
        question = fit_question(question.strip())  # chat and eval too, not only the CLI
        wanted = instruction(question)
        if wanted is not None:  # "Summarize ...": a request for a briefing, not a question
            return self.briefing(question, wanted)
        hits = self.retrieve(question, k)
        if self.settings.reader:
            return self.reading.answer(question, hits, t0, time.perf_counter())
        sentences = ev.rank_sentences(question, hits, self.embedder)
        t1 = time.perf_counter()
        chosen, told, verification = self.select(question, hits, sentences)
        if chosen is None:
            return self._abstain(question, hits, verification, t0, t1, told)
        kind = verification["answer_kind"]

        passage = next((h.chunk.text for h in hits if h.chunk.chunk_id == chosen.chunk_id), "")
        if reads_as_instructions(passage):
            verification["replaced"] = ("the passage reads as instructions to a model: it is "
                                        "quoted whole, never phrased")
            text, method = chosen.text, "extractive"
        elif kind == "yesno":
            # whether something happened is the passage's to say, in its own words
            verification["replaced"] = "a yes/no question is answered by quoting the passage"
            text, method = self._quote(question, chosen, sentences, kind, verification), \
                "extractive"
        else:
            text, method = self._phrase(question, chosen, sentences, kind, verification,
                                        on_token)
        citation = chosen.citation(1)
        verification["sources_agreeing"] = 1 + len(chosen.also_in)
        if chosen.also_in:
            verification["also_in"] = list(chosen.also_in)
        t2 = time.perf_counter()
        return Answer(question=question, answer=f"{text} [1]", abstained=False,
                      citations=(citation,), hits=tuple(hits),
                      timings=_timings(t0, t1, t2), method=method, verification=verification)

    def select(self, question: str, hits: list[Hit], sentences: list[ev.Sentence]
               ) -> tuple[ev.Sentence | None, ev.Sentence | None, dict]:
        """The evidence sentence to answer from, or None and why not (in verification
        ["reason"]; with the sentence that says the thing asked was not made known, when one
        does). Used by ask and by bench/squad.py, so both choose alike."""
        kind = ev.answer_kind(question)
        best = sentences[0] if sentences else None
        verification: dict = {"answer_kind": kind}
        if best is not None:
            verification.update(best_similarity=round(best.similarity, 4),
                                best_score=round(best.score, 4))
        th = self.thresholds
        if best is None or best.similarity < th.min_similarity or best.score < th.min_score:
            verification["reason"] = "no passage is close enough to the question"
            return None, None, verification
        unseen = ev.unseen_words(question, hits, self.embedder, self.store.mentions,
                                 th.unseen_word_cosine)
        if unseen:
            verification["unseen_words"] = unseen
            verification["reason"] = ("no document mentions " +
                                      ", ".join(f"“{w}”" for w in unseen))
            return None, None, verification
        told = next((s for s in sentences[:WITHHELD_AMONG] if ev.withheld(question, s.text)),
                    None)
        if told is not None:
            verification["reason"] = "the documents say this was not made known"
            verification["withheld"] = told.text
            return None, told, verification
        fitting = [s for s in sentences if ev.fits_kind(s.text, kind)]
        if not fitting:
            verification["reason"] = f"no retrieved sentence holds a {kind}"
            return None, None, verification
        named = ev.name_asked(question)
        if named is not None:  # "What is the name of the missiles ...": a name, next to them
            fitting = [s for s in fitting[:NAME_AMONG] if ev.gives_name(question, s.text)]
            if not fitting:
                verification["reason"] = f"no retrieved sentence gives the {named}’ name" \
                    if named.endswith("s") else f"no retrieved sentence gives the {named}’s name"
                return None, None, verification
        # a question that leaves its preposition hanging ("praised as", "ties with") is
        # answered by the sentence that has something in that place, among the best few
        slotted = next((s for s in fitting[:SLOT_AMONG] if ev.answer_slot(question, s.text)),
                       None)
        if slotted is not None:
            return slotted, None, verification
        return fitting[0], None, verification

    def _phrase(self, question: str, chosen: ev.Sentence, sentences: list[ev.Sentence],
                kind: str, verification: dict,
                on_token: Callable[[str], None] | None) -> tuple[str, str]:
        """The model's short answer as a run of the evidence sentence's own words, or the
        sentence itself when that fails; and which of the two it is.

        The model reads the one best sentence: on seeds/qa.jsonl SmolLM2 answered 32 of 44 right
        from one sentence, 27 from the best two, 23 from three."""
        th = self.thresholds
        values, note = fit_to_context(self.llm, "answer",
                                      {"passages": chosen.text, "question": question},
                                      th.answer_tokens)
        if note:
            verification["note"] = note
        gen = self.llm.generate("answer", values, max_tokens=th.answer_tokens,
                                grammar=ev.SHORT_ANSWER_GRAMMAR, on_token=on_token)
        verification.update(model=self.llm.name, model_said=gen.text,
                            prompt_tokens=gen.prompt_tokens,
                            completion_tokens=gen.completion_tokens)
        span = ev.align(gen.text, question, chosen.text, kind)
        replaced = "the model's words are not in the evidence"
        if kind == "number":
            figure = ev.best_figure(question, chosen.text, [s.text for s in sentences])
            if figure is not None and (span is None or not (
                    span[0] <= figure[0] and figure[1] <= span[1])):
                verification["figure_chosen_by_clause"] = chosen.text[figure[0]:figure[1]]
                span = figure
        if span is not None and len(gen.text.split()) >= MAX_MODEL_WORDS:
            verification["model_wrote_a_sentence"] = True
            replaced = "the model wrote a sentence of its own, not a copied answer"
            span = None
        if span is not None and len(chosen.text[span[0]:span[1]].split()) > MAX_PHRASE_WORDS:
            verification["phrase_too_long"] = chosen.text[span[0]:span[1]]
            replaced = "the model's answer is a sentence, not a phrase"
            span = None
        verification["checks"] = {"supported_by_passage": span is not None}
        slot = ev.answer_slot(question, chosen.text)
        if slot is not None:
            # what stands where the question's hanging preposition points ("praised them as
            # “great patriots”") is the answer: the model's words must agree with it
            verification["answer_slot"] = chosen.text[slot[0]:slot[1]]
            if span is not None and span[0] < slot[1] and slot[0] < span[1]:
                return chosen.text[slot[0]:slot[1]], "generated"
            if self.settings.answer_style == "short":
                verification["replaced"] = "the model's words are not where the question points"
                return chosen.text[slot[0]:slot[1]], "extractive"
            verification["replaced"] = ("the model's words are not where the question points: "
                                        "quoting the evidence there instead")
            return self._quote(question, chosen, sentences, kind, verification, slot), \
                "extractive"
        gap = ev.answer_gap(question, chosen.text) \
            if self.settings.answer_style == "short" else None
        if gap is not None and ev.fits_kind(chosen.text[gap[0]:gap[1]], kind):
            # what the sentence puts between two words the question keeps together ("grow [its
            # nuclear weapons stockpile] as a deterrent") is what the question left out, in
            # place of the model's words. Short style only: the quote style's answers were not
            # measured with it.
            verification["answer_gap"] = chosen.text[gap[0]:gap[1]]
            if span is not None and span[0] < gap[1] and gap[0] < span[1]:
                return chosen.text[gap[0]:gap[1]], "generated"
            verification["replaced"] = "the model's words are not in the question's gap"
            return chosen.text[gap[0]:gap[1]], "extractive"
        if span is not None:
            return chosen.text[span[0]:span[1]], "generated"
        if self.settings.answer_style == "short" and self.llm.can_score:
            verification["generated_rejected"] = replaced
            span = self._scored_span(question, chosen, kind, values, verification)
            if span is not None:
                return chosen.text[span[0]:span[1]], "chosen"
            replaced = verification.pop("why_replaced")
        verification["replaced"] = f"{replaced}: quoting the evidence sentence instead"
        return self._quote(question, chosen, sentences, kind, verification), "extractive"

    def _scored_span(self, question: str, chosen: ev.Sentence, kind: str, values: dict,
                     verification: dict) -> tuple[int, int] | None:
        """The run of the evidence sentence the model finds likeliest as its answer, among the
        runs that start on a word the question does not hold, stay within one clause, fit the
        kind of answer asked for and say something the question does not."""
        starts = ev.span_starts(question, chosen.text)
        if not starts:
            verification["why_replaced"] = "the evidence holds no word the question does not"
            return None
        texts = [chosen.text[a:b] for a, b in starts]
        scored = self.llm.score_continuations("answer", values, texts,
                                              [ev.word_ends(t) for t in texts])
        head, qualifier = ev.focus(question), ev.asks_kind_of(question)
        # when the sentence names the noun asked about, a run far from it (or, asked what kind,
        # not before it) is discounted as if a sentence's length away
        head_words = len(ev.word_ends(chosen.text)) if head is not None and FOCUS_WEIGHT and \
            ev.holds_word(chosen.text, head) else 0
        runs: list[tuple[float, int, int, int | None]] = []  # score, start, end, to the noun
        for (a, _), ends in zip(starts, scored):
            for end, logp in ends:
                span = chosen.text[a:a + end]
                if not ev.fits_kind(span, kind) or not ev.adds_information(span, question):
                    continue
                score = logp - NEAR_WEIGHT * np.log1p(ev.distance_to_question(
                    question, chosen.text, a, a + end))
                d = None
                if head_words:
                    d = ev.distance_to_word(head, chosen.text, a, a + end, qualifier)
                    score -= FOCUS_WEIGHT * np.log1p(head_words if d is None else d)
                runs.append((float(score), a, a + end, d))
        # "Besides construction workers, who else ...": another item of the list that holds them
        aside = ev.besides(question)
        if aside:
            runs = [r for r in runs if ev.listed_with(aside, chosen.text, r[1], r[2])] or runs
        # the answer stands beside the noun asked about: when runs do, only those are chosen from
        if head_words:
            runs = [r for r in runs if r[3] is not None and r[3] <= FOCUS_REACH] or runs
        # asked what kind of thing, a run of names alone ("Ukraine" for the types of weapons
        # supplied) names a place or a party, not a kind: when other runs fit, those are chosen
        # (SQuAD even-300 and odd-200 unchanged: two kind questions there, neither answered by
        # names alone)
        if qualifier:
            runs = [r for r in runs if not ev.names_only(chosen.text, r[1], r[2])] or runs
        best = max(runs, default=None)
        all_scores = [r[0] for r in runs]
        if best is None:
            verification["why_replaced"] = "no run of the evidence fits the question"
            verification["checks"] = {"supported_by_passage": False}
            return None
        runner_up = sorted(all_scores)[-2] if len(all_scores) > 1 else best[0] - 99.0
        verification.update(model=self.llm.name, model_chose=chosen.text[best[1]:best[2]],
                            model_logprob=round(best[0], 3),
                            model_margin=round(best[0] - runner_up, 3))
        verification["checks"] = {"supported_by_passage": True}
        # a quoted term is answered whole, a bare noun with the words that qualify it
        a, b = ev.whole_quotation(chosen.text, best[1], best[2])
        return ev.with_modifiers(question, chosen.text, a, b)

    def _quote(self, question: str, chosen: ev.Sentence, sentences: list[ev.Sentence],
               kind: str, verification: dict, must: tuple[int, int] | None = None) -> str:
        """The evidence sentence in its own words; of a long one, the clauses that answer (and
        hold `must`, when given)."""
        a, b = ev.quote_window(question, chosen.text, kind, [s.text for s in sentences],
                               QUOTE_WORDS, must)
        if (a, b) != (0, len(chosen.text)):
            verification["quoted_part"] = [a, b]
        return chosen.text[a:b]

    def _abstain(self, question: str, hits: list[Hit], verification: dict,
                 t0: float, t1: float, told: ev.Sentence | None = None) -> Answer:
        text = ABSTAIN_TEXT
        citations: tuple = ()
        if told is not None:  # the passage saying so is cited: the reader can check
            text = f"{ABSTAIN_TEXT[:-1]}: {verification['reason']} [1]."
            citations = (told.citation(1),)
        elif verification.get("reason"):  # the reason is worth saying in words
            text = f"{ABSTAIN_TEXT[:-1]}: {verification['reason']}."
        return Answer(question=question, answer=text, abstained=True, citations=citations,
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
