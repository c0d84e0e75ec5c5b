"""Follow-ups read with their first pronoun replaced by what the turn before was about: when a
follow-up abstains as `rag chat` asks it, it is read again (over the same passages, searched
with the same standalone query) with "he", "it", "that", "there"... replaced by each of the
previous answer's span (at most six words), the previous question's named entities and its
subject; the variant with the highest answerability chance is answered when it reaches the
threshold.

    .venv/bin/python bench/followup_variants.py [SET ...]   (default: both development sets)

Prints each set's follow-up verdicts and every variant read, with its chance."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rag.chat as chat  # noqa: E402
from bench import natural  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.rewrite import _entities, _subject  # noqa: E402

_PRONOUN = re.compile(r"\b(he|she|it|they|him|her|them|that|this|those|these|there|his|its|"
                      r"their|hers|theirs)\b", re.I)
_POSSESSIVE = {"his", "its", "their", "hers", "theirs"}
READ: list[tuple] = []


def variants(question: str, previous: str, span: str | None) -> list[str]:
    m = _PRONOUN.search(question)
    if not m:
        return []
    phrases = [span] if span and len(span.split()) <= 6 else []
    phrases += [p for p in [*_entities(previous), _subject(previous)] if p and p not in phrases]
    word = m.group(1).lower()
    return [question[:m.start()] + (f"{p}'s" if word in _POSSESSIVE else
                                    f"in {p}" if word == "there" else p) + question[m.end():]
            for p in phrases[:3]]


_turn, _ask = chat.ChatAnswerer.ask_turn, chat.Session.ask


def ask_turn(self, rewrite, k=None):
    answer = _turn(self, rewrite, k)
    if not rewrite.rewritten or not answer.abstained or getattr(self, "previous", None) is None:
        return answer
    best = answer
    for v in variants(rewrite.question, *self.previous):
        self.search_query = rewrite.query
        try:
            got = self.ask(v, k)
        finally:
            self.search_query = None
        READ.append((rewrite.question, v, got.verification.answerable_chance,
                     got.verification.best_span))
        if not got.abstained and (best.abstained or got.verification.answerable_chance >
                                  best.verification.answerable_chance):
            best = got
    return best


def ask(self, question):
    answer = _ask(self, question)
    turn = self.conversation.last
    self.answerer.previous = (turn.rewrite.question,
                              None if answer.abstained else answer.verification.best_span)
    return answer


def main() -> None:
    chat.ChatAnswerer.ask_turn, chat.Session.ask = ask_turn, ask
    for name in sys.argv[1:] or ["calibration", "calibration_kernel"]:
        settings = Settings.from_env(index_dir=ROOT / "bench" / "work" / name / "index")
        summary, rows = natural.run(settings, ROOT / "bench" / name / "questions.jsonl")
        print(name, {k: summary[k] for k in ("answerable_right", "answerable_wrong")},
              "follow-ups:", summary["by_kind"].get("followup"))
    for row in READ:
        print(row)


if __name__ == "__main__":
    main()
