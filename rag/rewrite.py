"""Follow-up questions made standalone, so that retrieval finds what the conversation is about.

"And how many of them have been killed in combat?" means nothing to an index. A follow-up (it
refers back with they/them/it/he/there..., starts with "what about", or has fewer than three
content words) gets a search query: the user's question, whole, plus the content words of the
previous turn (its question, its answer, then what it had carried itself; at most 16, newest
first). A question that stands alone is left as it is (a leading "And"/"So" aside), and no
rewrite ever drops a word of the user's question.

Measured by bench/followups.py on seeds/followups.jsonl (20 dialogues, 24 follow-up turns;
bench/results_followups.md), on the seeds alone / among 500 SQuAD paragraphs:

    follow-up searched as                 source R@5      answer accuracy
    typed (no rewrite)                    1.000 / 0.826   0.583 / 0.542
    + subject and names of previous turn  1.000 / 1.000   0.625 / 0.667
    + words of the previous turn          1.000 / 1.000   0.667 / 0.750   (the default)
    SmolLM2-135M rewrite (llm)            1.000 / 0.913   0.542 / 0.708

The 135M model's rewrites are mostly invented text ("Shigeru Ishiba is a Japanese martial arts
master...") and cost 4-8 s, so `llm` is an option, not the default.

The query is for retrieval; the answer is phrased and checked against the user's own question
(rag/chat.py), since the carried words would make the answer pick the previous turn's figure
("15,000" again instead of "600"); only when that abstains is the query itself answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.text import STOPWORDS, stem, unpossess

MODES = ("rules", "llm", "off")

_CONNECTOR = re.compile(r"^(?:and|so|also|but|then|okay|ok|well)\b[\s,]*", re.I)
_ABOUT = re.compile(r"^(?:and\s+)?(?:what|how)\s+about\s+(?P<rest>.+?)\s*\??$", re.I)
_WORD = re.compile(r"[A-Za-z][\w'’.-]*[\w]|[A-Za-z]|\d[\d,.]*\d|\d")
ANAPHORA = frozenset("""they them their theirs it its he him his she her hers those these
there this such else same""".split())
_AUX = frozenset("""have has had were was are is did do does will would can could been be being
may might should shall""".split())
# Capitalised at the start of a question for grammar, not because they are names.
_OPENERS = STOPWORDS | _AUX | {"according", "besides", "since", "after", "before", "during",
                              "in", "on", "to", "for", "from", "with", "at", "by"}
_GENERIC = frozenset("""many much kind type sort number name also particular else exactly
still now then""".split())
_FILLER = frozenset("about roughly around nearly some since last".split())
MIN_STANDALONE_WORDS = 3
MAX_CARRIED = 16


@dataclass(frozen=True)
class Rewrite:
    question: str  # what the user asked, a leading "And"/"So" removed: the answer is phrased on it
    query: str  # what is searched: the question plus what it refers to
    method: str  # "unchanged" | "rules" | "llm" | "llm+words"

    @property
    def rewritten(self) -> bool:
        return self.query != self.question


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _key(word: str) -> str:
    return stem(unpossess(word.lower()).strip("'’."))


def content_keys(text: str) -> set[str]:
    return {_key(w) for w in _words(text) if w.lower() not in STOPWORDS and
            w.lower() not in ANAPHORA and w.lower() not in _AUX and w.lower() != "about"}


def strip_connector(question: str) -> str:
    q = question.strip()
    if _ABOUT.match(q):
        return q
    rest = _CONNECTOR.sub("", q, count=1)
    if rest and rest != q:
        return rest[0].upper() + rest[1:]
    return q


def _refers_back(words: list[str]) -> bool:
    lower = [w.lower() for w in words]
    for i, w in enumerate(lower):
        if w not in ANAPHORA:
            continue
        # "is there", "there are": existential, not a place referred to
        if w == "there" and ((i > 0 and lower[i - 1] in _AUX) or
                             (i + 1 < len(lower) and lower[i + 1] in _AUX)):
            continue
        return True
    return False


def is_follow_up(question: str) -> bool:
    """True when the question leans on what came before it."""
    q = strip_connector(question)
    if _ABOUT.match(q):
        return True
    if _refers_back(_words(q)):
        return True
    return len(content_keys(q) - _GENERIC) < MIN_STANDALONE_WORDS


def _entities(text: str) -> list[str]:
    """Runs of capitalised words (names, places, "North Korean"), a question's opener aside."""
    out: list[str] = []
    run: list[str] = []
    for i, w in enumerate(_words(text) + [""]):
        named = w[:1].isupper() and not (i == 0 and w.lower() in _OPENERS)
        if named and w.lower() not in ANAPHORA:
            run.append(w)
            continue
        if run:
            out.append(" ".join(run))
            run = []
    return out


def _subject(question: str) -> str | None:
    """What a question is about: "how many X", "which X", "what kind of X" -> X."""
    m = re.match(r"^(?:(?:in|to|from|for|at|on|with|by|of)\s+)?"
                 r"(?:how (?:many|much)|which|what(?: (?:kind|type|sort) of)?)\s+(.+)$",
                 question.strip(), re.I)
    if not m:
        return None
    taken: list[str] = []
    for w in _words(m.group(1)):
        lw = w.lower()
        if lw in _AUX or lw in ANAPHORA or (len(lw) > 4 and lw.endswith("ed")) or len(taken) >= 4:
            break
        taken.append(w)
    while taken and taken[-1].lower() in STOPWORDS:
        taken.pop()
    return " ".join(taken) or None


def carried(question: str, previous_query: str, previous_answer: str = "",
            carry: str = "words") -> list[str]:
    """The phrases of the previous turn that the question may refer to, those it does not
    already say: its subject and named entities, or (carry="words") every content word."""
    answer = re.sub(r"\s*\[\d+\]", "", previous_answer)
    if carry == "words":
        # newest first (the previous question's own words, its answer, then what it had
        # carried itself), and at most MAX_CARRIED: a long chat must not grow the query forever
        own, _, older = previous_query.partition("? (")
        phrases = [w for w in _words(f"{own} {answer} {older}")
                   if w.lower() not in STOPWORDS and w.lower() not in _AUX and
                   w.lower() not in ANAPHORA and w.lower() not in _FILLER]
    else:
        phrases = [p for p in [_subject(previous_query), *_entities(previous_query),
                               *_entities(answer)] if p]
    have = content_keys(question)
    out: list[str] = []
    for p in phrases:
        keys = content_keys(p) - _GENERIC
        if not keys or keys <= have:
            continue
        if any(keys <= content_keys(o) for o in out):
            continue
        out = [o for o in out if not content_keys(o) <= keys]
        out.append(p)
        have |= keys
    return out[:MAX_CARRIED] if carry == "words" else out


def rewrite_rules(question: str, previous_query: str | None, previous_answer: str = "",
                  carry: str = "words") -> Rewrite:
    clean = strip_connector(question)
    if not previous_query or not is_follow_up(question):
        return Rewrite(clean, clean, "unchanged")
    about = _ABOUT.match(clean)
    if about:  # "What about X?": the previous question, now about X
        query = f"{previous_query.rstrip(' ?')} {about.group('rest')}?"
        return Rewrite(clean, query, "rules")
    extra = carried(clean, previous_query, previous_answer, carry)
    if not extra:
        return Rewrite(clean, clean, "unchanged")
    sep = " " if carry == "words" else ", "
    return Rewrite(clean, f"{clean.rstrip(' ?')}? ({sep.join(extra)})", "rules")


REWRITE_GRAMMAR = r"""
root ::= [^\n?\[\]]{3,240} "?"
"""
REWRITE_TOKENS = 64


def rewrite_llm(llm, question: str, previous_query: str | None,
                previous_answer: str = "") -> Rewrite:
    """The model restates a follow-up (only a follow-up: a standalone question is left alone);
    any of the user's content words it dropped are added back."""
    from rag.prompt_tokens import fit_to_context

    clean = strip_connector(question)
    if not previous_query or not is_follow_up(question):
        return Rewrite(clean, clean, "unchanged")
    values = {"previous_question": previous_query,
              "previous_answer": re.sub(r"\s*\[\d+\]", "", previous_answer) or "(none)",
              "question": clean}
    values, _ = fit_to_context(llm, "rewrite", values, REWRITE_TOKENS, cut="previous_answer")
    said = " ".join(llm.generate("rewrite", values, max_tokens=REWRITE_TOKENS,
                                 grammar=REWRITE_GRAMMAR).text.split())
    if not said:
        return Rewrite(clean, clean, "unchanged")
    missing = [w for w in _words(clean) if w.lower() not in STOPWORDS and
               w.lower() not in ANAPHORA and _key(w) not in content_keys(said)]
    if missing:
        return Rewrite(clean, f"{said.rstrip(' ?')}? ({' '.join(missing)})", "llm+words")
    return Rewrite(clean, said, "llm")
