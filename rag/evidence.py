"""From retrieved passages to the few sentences that answer a question, and the checks an
answer must pass against them. The model only ever chooses among these sentences."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rag.chunking import split_sentences
from rag.embedder import Embedder
from rag.text import STOPWORDS, rarity
from rag.types import Citation, Hit

LEXICAL_WEIGHT = 0.5  # tuned on SQuAD even questions: 0.35 -> 201/300, 0.5 -> 205/300
# SQuAD even-1000, the sentence chosen holds an answer: 0.687 without, 0.698 / 0.700 / 0.700 /
# 0.697 at 0.02 / 0.03 / 0.05 / 0.07 (its passage the gold one: 0.737 -> 0.758 at 0.05)
PASSAGE_WEIGHT = 0.05
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
            word = word[: -len(suffix)]
            break
    # "preside" and "presided", "estimate" and "estimates" meet at "presid", "estimat"
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def content_words(text: str) -> set[str]:
    return {_stem(_POSSESSIVE.sub("", w)) for w in re.findall(r"[\w'’]+", text.lower())
            if w not in STOPWORDS}


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
    """The retrieved passages' sentences, best first: cosine to the question plus the share of
    the question's words each holds, every word weighted by how rare it is among the candidate
    sentences ("Beijing" tells more than "North Korea", which every sentence repeats) -- the
    sentence's `score` -- and, for the order only, its passage's standing in retrieval
    (PASSAGE_WEIGHT per standard deviation of the hits' scores)."""
    candidates = candidate_sentences(hits)
    if not candidates:
        return []
    vecs = embedder.embed([question] + [t for *_, t in candidates])
    # row by row, each row summed alike: a matrix product (BLAS) may sum some rows in
    # another order, and two copies of one sentence then differ in the last bit
    sims = (vecs[1:] * vecs[0]).sum(axis=1)
    q_words = content_words(question)
    words = [content_words(t) for *_, t in candidates]
    weight = rarity(q_words, words)
    total = sum(weight.values())
    scores = np.array([h.score for h in hits])
    standing = {h.chunk.chunk_id: float((h.score - scores.mean()) / (scores.std() or 1.0))
                for h in hits}
    ranked = []
    order = []
    for (hit, start, end, text), sim, ws in zip(candidates, sims, words):
        overlap = sum(weight[w] for w in q_words & ws) / total if total else 0.0
        ranked.append(Sentence(hit.chunk.source, hit.chunk.chunk_id, start, end, text,
                               float(sim), overlap, float(sim) + LEXICAL_WEIGHT * overlap,
                               hit.also_in))
        order.append(ranked[-1].score + PASSAGE_WEIGHT * standing[hit.chunk.chunk_id])
    return [ranked[i] for i in sorted(range(len(ranked)), key=lambda i: -order[i])]


# -- what the documents never speak of -------------------------------------------------------

# Words that shape a question rather than say what it is about: "How many ..." asks for a
# figure whether or not a passage says "many"; "What is the name of ..." for a name.
QUESTION_FRAME = frozenset("""many much kind kinds type types sort sorts name named called
city town country place region year years month months day days date time times number
figure amount percentage say said says tell else besides also one ones way happen happened
""".split())


# English verbs whose forms a stemmer cannot join: "hold talks" is answered by "held talks".
_IRREGULAR = [line.split() for line in """
arise arose arisen|be was were been|beat beaten|become became|begin began
begun|bend bent|bind bound|bite bit bitten|blow blew blown|break broke broken|bring brought|
build built|burn burnt|buy bought|catch caught|choose chose chosen|come came|creep crept|
deal dealt|dig dug|do did done|draw drew drawn|drink drank drunk|drive drove driven|eat ate
eaten|fall fell fallen|feed fed|feel felt|fight fought|flee fled|fly flew flown|
forbid forbade forbidden|forget forgot forgotten|forgive forgave forgiven|freeze froze frozen|
get got gotten|give gave given|go went gone|grow grew grown|hang hung|have had|
hear heard|hide hid hidden|hold held|keep kept|kneel knelt|know knew known|lay laid|lead led|
leave left|lend lent|light lit|lose lost|make made|mean meant|meet met|
oversee oversaw overseen|pay paid|ride rode ridden|ring rang rung|rise rose risen|run ran|
say said|see saw seen|seek sought|sell sold|send sent|shake shook shaken|shine shone|
shoot shot|show shown|shrink shrank shrunk|sing sang sung|sink sank sunk|sit sat|sleep slept|
slide slid|speak spoke spoken|spend spent|spin spun|stand stood|steal stole stolen|stick stuck|
sting stung|strike struck|strive strove striven|swear swore sworn|sweep swept|swim swam swum|
take took taken|teach taught|tear tore torn|tell told|think thought|throw threw thrown|
understand understood|undertake undertook undertaken|wake woke woken|wear wore worn|
weep wept|win won|withdraw withdrew withdrawn|write wrote written
""".replace("\n", " ").split("|")]
_FORMS = {form: tuple(group) for group in _IRREGULAR for form in group}


def _forms(word: str) -> tuple[str, ...]:
    return _FORMS.get(word, (word,))


def unseen_words(question: str, hits: list[Hit], embedder: Embedder,
                 mentions: Callable[[str], bool], min_cosine: float) -> list[str]:
    """The question's words that no indexed passage mentions, and that nothing in the
    retrieved passages comes close to in meaning (best cosine between single-word embeddings
    below min_cosine): "wounded" when the documents only count the dead. A question about
    something the documents never speak of cannot be answered from them."""
    closeness = unseen_closeness(question, hits, embedder, mentions)
    return [w for w, best in closeness.items() if best < min_cosine]


def unseen_closeness(question: str, hits: list[Hit], embedder: Embedder,
                     mentions: Callable[[str], bool]) -> dict[str, float]:
    """Each question word no indexed passage mentions -> the best cosine between it and a word
    of the retrieved passages (0.0 when they hold no words)."""
    sequence = re.findall(r"[a-z]+", question.lower())
    words = [w for w in dict.fromkeys(sequence)
             if w not in STOPWORDS and w not in QUESTION_FRAME and len(w) > 2]
    absent = [w for w in words if not any(mentions(f) for f in _forms(w))]
    # a word that only qualifies the next, which the documents do mention, narrows the
    # question without leaving the documents: "which family dynasty" is "the Kim dynasty"
    qualifiers = {a for a, b in zip(sequence, sequence[1:])
                  if b not in STOPWORDS and len(b) > 2 and b not in absent
                  and any(mentions(f) for f in _forms(b))}
    absent = [w for w in absent if w not in qualifiers]
    if not absent:
        return {}
    vocab = sorted({w for h in hits for w in re.findall(r"[a-z]+", h.chunk.text.lower())
                    if w not in STOPWORDS and len(w) > 2})
    if not vocab:
        return dict.fromkeys(absent, 0.0)
    vecs = embedder.embed(absent + vocab)
    best = (vecs[len(absent):] @ vecs[:len(absent)].T).max(axis=0)  # vocab x absent
    return {w: float(c) for w, c in zip(absent, best)}


# -- the answer's shape, from the question ---------------------------------------------------

_NUMBER_WORDS = r"(?:\d|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|" \
                r"dozen|hundred|thousand|million|billion|several|few)"
# What says when: a named month or day, a unit of calendar time ("last week", "two years
# ago"), a season. "recently" or a bare figure ("101 soldiers") does not.
_TIMES = r"(?:january|february|march|april|may|june|july|august|september|october|" \
         r"november|december|monday|tuesday|wednesday|thursday|friday|saturday|sunday|" \
         r"year|month|week|day|today|yesterday|tomorrow|tonight|century|centuries|decade|" \
         r"spring|summer|autumn|winter|ago|era|age|period|morning|evening|night|dynasty|reign)"


def answer_kind(question: str) -> str:
    q = question.lower().strip()
    if re.match(r"(how far|(what|which) distance|(what|which) (is|was|are|were) the "
                r"(range|distance) (of|to|between))\b", q):
        return "distance"
    if re.match(r"(how fast|(at )?(what|which) speeds?)\b", q):
        return "speed"
    if re.match(r"(how (many|much)|what (number|percentage|amount))\b", q):
        return "number"
    if re.match(r"(when|(what|which) (year|date|day|month|time)|(in|on|by) (what|which) "
                r"(year|date|day|month|time))\b", q):
        return "time"
    if re.match(r"(who|whom|whose)\b", q):
        return "person"
    if re.match(r"(is|are|was|were|did|does|do|has|have|had|can|could|will|would|should)\b", q):
        return "yesno"
    return "other"


_DISTANCE_UNITS = r"(?:km|kilomet(?:er|re)s?|miles?|m|met(?:er|re)s?|feet|ft|yards?|nautical)"
_SPEED_UNITS = r"(?:km/h|kph|mph|knots?|m/s|miles? (?:an|per) hour|kilomet(?:er|re)s? (?:an|per) " \
               r"hour)"


def fits_kind(span: str, kind: str) -> bool:
    s = span.lower()
    if kind == "distance":
        return re.search(r"\b" + _NUMBER_WORDS + r"[\d,.]*\s*(?:-\s*)?" + _DISTANCE_UNITS +
                         r"\b", s) is not None
    if kind == "speed":
        return re.search(r"\bmach\s*\d|\b" + _NUMBER_WORDS + r"[\d,.]*\s*" + _SPEED_UNITS,
                         s) is not None or "speed of sound" in s
    if kind == "number":
        return re.search(r"\b" + _NUMBER_WORDS + r"s?\b", s) is not None or \
            re.search(r"\d", s) is not None
    if kind == "time":
        return re.search(r"\b(?:1\d{3}|20\d{2})s?\b|\b\d{1,2}(?:st|nd|rd|th)\b|\b\d0s\b",
                         s) is not None or re.search(r"\b" + _TIMES + r"s?\b", s) is not None
    if kind == "person":
        return re.search(r"\b[A-Z][a-z]+", span) is not None or \
            re.search(r"\b(officials?|leaders?|president|minister|government|media|"
                      r"intelligence|agency|experts?)\b", s) is not None
    return True


def adds_information(span: str, question: str) -> bool:
    """An answer must say something the question did not already say."""
    return bool(content_words(span) - content_words(question))


# -- constrained generation and verification ------------------------------------------------

# The model may say at most 16 words, on one line, with no citation markers of its own:
# it phrases, and the pipeline decides what is cited.
# A word is at most 24 characters and holds a comma only between digit groups ("15,000"): when
# the words run out, a small model otherwise glues the rest of its sentence into one word.
SHORT_ANSWER_GRAMMAR = r"""
root ::= word (" " word){0,15}
word ::= [^ \t\n\r\[\],] [^ \t\n\r\[\],]{0,23} ("," [0-9] [0-9] [0-9])* ","?
"""

_WORD = re.compile(r"[$£€]?\w(?:[\w'’\-.,%/:]*\w)?%?")
_BREAK = re.compile(r"[;()“”\"]|\s[-–—]\s")
SPAN_STOPWORDS = STOPWORDS | {"also", "its", "his", "her", "which", "while", "not",
                              "said", "says", "according", "both", "such", "than", "as"}


def _norm(word: str) -> str:
    return _stem(_POSSESSIVE.sub("", word.lower()).strip("'’"))


_POSSESSIVE = re.compile(r"['’]s$")


def _norm_words(text: str) -> list[str]:
    return [_norm(m.group()) for m in _WORD.finditer(text)]


def align(answer: str, question: str, sentence: str, kind: str,
          max_words: int = 10) -> tuple[int, int] | None:
    """The run of words in `sentence` that best matches what the model answered, as character
    offsets; None when the model's answer is not supported by the sentence.

    The model's words that merely repeat the question are set aside; what remains must be found
    in the sentence (token F1 >= 0.5 against a run of at most max_words words that does not
    cross a bracket or quotation mark and fits the kind of answer asked for)."""
    q_words = set(_norm_words(question))
    said = [w for w in _norm_words(answer) if w not in q_words and w not in SPAN_STOPWORDS]
    if not said:
        return None
    said_set = set(said)
    # a figure is the answer's backbone: the span must give the figures the model gave, no other
    figures_said = {w for w in said if any(ch.isdigit() for ch in w)}
    words = [(m.start(), m.end(), _norm(m.group())) for m in _WORD.finditer(sentence)]
    best: tuple[float, int, int, int] | None = None
    for i in range(len(words)):
        if words[i][2] in SPAN_STOPWORDS or words[i][2] not in said_set:
            continue  # an answer starts on a word the model said
        for j in range(i, min(len(words), i + max_words)):
            if j > i and _BREAK.search(sentence[words[j - 1][1]:words[j][0]]):
                break
            if words[j][2] not in said_set:
                continue  # and ends on one
            run = [w[2] for w in words[i:j + 1] if w[2] not in SPAN_STOPWORDS]
            common = sum(1 for w in run if w in said_set)
            if not common:
                continue
            precision, recall = common / len(run), len(set(run) & said_set) / len(said_set)
            f1 = 2 * precision * recall / (precision + recall)
            text = sentence[words[i][0]:words[j][1]]
            figures = {w for w in run if any(ch.isdigit() for ch in w)}
            if figures_said and not (figures and figures <= figures_said):
                continue
            if f1 < 0.5 or not fits_kind(text, kind) or not adds_information(text, question):
                continue
            key = (f1, -(j - i), -i, j)
            if best is None or key > best:
                best = key
    if best is None:
        return None
    return complete(sentence, words[-best[2]][0], words[best[3]][1])


# Words a phrase does not end on: "early next" is "early next year" cut short.
_OPEN_ENDED = frozenset("""a an the of and or to in on for with by at from into than per this
that these those next last early late mid its their his her our""".split())


def complete(sentence: str, start: int, end: int, limit: int = 4) -> tuple[int, int]:
    """(start, end) grown to the end of the phrase it cuts short: a name runs on while the next
    word is capitalised ("Korean Central" -> "Korean Central News Agency"), and a phrase does
    not end on an article, a preposition or words like "next" ("early next" -> "early next
    year"). Only across plain spaces: never past punctuation, and at most `limit` words."""
    for _ in range(limit):
        m = re.match(r" ([\w’'\-]+)", sentence[end:])
        if m is None:
            break
        last = sentence[start:end].split()[-1] if sentence[start:end].split() else ""
        nxt = m.group(1)
        name_runs_on = last[:1].isupper() and nxt[:1].isupper()
        if not (name_runs_on or last.lower() in _OPEN_ENDED):
            break
        end += m.end()
    return start, end


_FIGURE = re.compile(r"(?:(?:about|roughly|around|over|nearly|almost|some|more than|at least|"
                     r"an estimated|up to)\s+)?[$£€]?\d[\d,.]*%?(?:\s+(?:million|billion|"
                     r"thousand|hundred))?", re.I)


def best_figure(question: str, sentence: str, others: list[str]) -> tuple[int, int] | None:
    """When a sentence gives several figures, the one whose clause says what the question asks.

    Each clause (the text between commas or semicolons) is scored by the question's words it
    holds, each weighted by how rare it is among the retrieved sentences: "killed in combat"
    tells more than "North Korean", which every passage repeats. None when the sentence holds
    fewer than two figures or no clause is more relevant than another."""
    figures = [m for m in _FIGURE.finditer(sentence)]
    if len({m.group() for m in figures}) < 2:
        return None
    q_words = content_words(question)
    docs = [content_words(t) for t in others] or [content_words(sentence)]
    weight = rarity(q_words, docs)
    scored = []
    for m in figures:
        a = max(sentence.rfind(",", 0, m.start()), sentence.rfind(";", 0, m.start())) + 1
        ends = [i for i in (sentence.find(",", m.end()), sentence.find(";", m.end())) if i >= 0]
        b = min(ends) if ends else len(sentence)
        clause = content_words(sentence[a:b])
        scored.append((sum(weight[w] for w in q_words & clause), -m.start(), m))
    scored.sort(key=lambda x: (x[0], x[1]), reverse=True)
    if scored[0][0] <= scored[1][0]:
        return None
    m = scored[0][2]
    return m.start(), m.end()


# Where a sentence divides into clauses: a comma, semicolon or colon followed by a space, a
# spaced dash, a bracket. ("15,000" holds no space after its comma and stays whole.)
_CLAUSE_BREAK = re.compile(r"[,;:](?=\s)|\s[–—-]\s|[()]")


def clauses(sentence: str) -> list[tuple[int, int]]:
    """(start, end) of each clause of `sentence`, stripped of the breaks between them."""
    out, start = [], 0
    for m in list(_CLAUSE_BREAK.finditer(sentence)) + [None]:
        end = m.start() if m else len(sentence)
        a, b = start, end
        while a < b and sentence[a].isspace():
            a += 1
        while b > a and sentence[b - 1].isspace():
            b -= 1
        if b > a and re.search(r"\w", sentence[a:b]):
            out.append((a, b))
        start = m.end() if m else len(sentence)
    return out


def quote_window(question: str, sentence: str, kind: str, others: list[str],
                 max_words: int, must: tuple[int, int] | None = None) -> tuple[int, int]:
    """The part of `sentence` to quote as an answer: the whole of it when it is short, else the
    run of whole clauses of at most `max_words` words that holds most of what the question asks
    (its words weighted by rarity among the retrieved sentences, as best_figure does), gives
    the kind of answer asked for and says something the question does not. A long quotation
    leaves the reader to find the answer in it; the clause that speaks of the question's
    subject is where the answer is. (SQuAD even-300, first fitting sentence: it holds the
    answer 68%; its quoted part at 25 words 57% in 17 words on average, 60% at 30 words.)
    A window must hold sentence[must[0]:must[1]] when `must` is given (the answer slot)."""
    if len(sentence.split()) <= max_words:
        return 0, len(sentence)
    parts = clauses(sentence)
    q_words = content_words(question) - QUESTION_FRAME
    docs = [content_words(t) for t in others] or [content_words(sentence)]
    weight = rarity(q_words, docs)
    best: tuple[float, int, int] | None = None
    for i in range(len(parts)):
        for j in range(i, len(parts)):
            a, b = parts[i][0], parts[j][1]
            text = sentence[a:b]
            n_words = len(text.split())
            if n_words > max_words:
                break
            if not fits_kind(text, kind) or not adds_information(text, question):
                continue
            if must is not None and not (a <= must[0] and must[1] <= b):
                continue
            # each word of the window costs a little: a clause joins only for what it adds
            score = sum(weight[w] for w in q_words & content_words(text)) - 0.01 * n_words
            if best is None or score > best[0]:
                best = (score, a, b)
    if best is None:  # no run of clauses is short enough: the best run of words
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]
        for i in range(0, max(1, len(words) - max_words + 1)):
            a, b = words[i][0], words[min(len(words), i + max_words) - 1][1]
            text = sentence[a:b]
            score = sum(weight[w] for w in q_words & content_words(text))
            if must is not None and not (a <= must[0] and must[1] <= b):
                score -= 1000.0  # only when no window of max_words words holds it
            if best is None or score > best[0]:
                best = (score, a, b)
    assert best is not None
    return best[1], best[2]


# -- what the documents say was not made known -----------------------------------------------

# "did not disclose the missile types", "an undisclosed location", "details of the systems
# were not disclosed", "declined to specify the systems involved"
_WITHHELD = re.compile(
    r"\b(?:did not|didn't|does not|doesn't|do not|would not|wouldn't|declined to|refused to|"
    r"could not|couldn't|without) (?:disclose|specify|reveal|identify|say|name|detail|give)\w*"
    r"|\b(?:undisclosed|unspecified|unidentified|unnamed|unknown)\b"
    r"|\b(?:was|were|is|are|been|being) (?:not|never) (?:yet )?(?:disclosed|specified|"
    r"revealed|identified|made public|released|known|named)\b", re.I)
_PASSIVE = ("was", "were", "is", "are", "been", "being")
# Words that ask for the same thing: a question for the "name" is told "the types were not
# disclosed".
_ASKED_ALIKE = [frozenset(g.split()) for g in (
    "name names designation designations type types kind kinds model models identity",
    "location locations place places site sites where whereabouts",
    "system systems weapon weapons equipment",
    "range ranges distance distances far",
    "number numbers many much figure figures count total",
    "time date day when",
)]
_FOCUS = [
    re.compile(r"^(?:which|what)\s+(?:\w+\s+){0,3}?(\w+)\s+(?:did|do|does|was|were|is|are|"
               r"has|have|had|will|would|can|could)\b", re.I),
    re.compile(r"^(?:what|which)\s+(?:is|was|are|were)\s+the\s+(\w+)(?:\s+or\s+(\w+))?\s+of\b",
               re.I),
    re.compile(r"^(?:from|in|at|to)\s+(?:which|what)\s+(\w+)\b", re.I),
    re.compile(r"^(where|when)\b", re.I),
]


def asked_for(question: str) -> set[str]:
    """The thing a question asks for, as words: "Which location were ... launched?" ->
    {"location", "place", "site", "where", ...}; empty when its form is not one of the plain
    wh- forms."""
    for pattern in _FOCUS:
        m = pattern.match(question.strip())
        if m:
            heads = {g.lower() for g in m.groups() if g}
            out = set(heads)
            for group in _ASKED_ALIKE:
                if heads & group:
                    out |= group
            return out
    return set()


def withheld(question: str, sentence: str) -> bool:
    """Whether `sentence` says that the very thing `question` asks for was not made known:
    a non-disclosure ("undisclosed", "did not disclose", "were not disclosed") whose clause
    names what the question asks for."""
    focus = asked_for(question)
    if not focus:
        return False
    for m in _WITHHELD.finditer(sentence):
        cue = m.group().lower()
        start = max(sentence.rfind(",", 0, m.start()), sentence.rfind(";", 0, m.start())) + 1
        if cue.startswith("un"):  # "an undisclosed location": the words it qualifies
            scope = " ".join(re.split(r"[,;.]", sentence[m.end():], maxsplit=1)[0].split()[:3])
        elif cue.split()[0] in _PASSIVE:  # "details of the systems ... were not disclosed"
            end = next((i for i in (sentence.find(",", m.end()), sentence.find(";", m.end()))
                        if i >= 0), len(sentence))
            scope = sentence[start:end]
        else:  # "did not disclose the missile types tested, the location ...": the list runs on
            scope = sentence[start:]
        words = set(re.findall(r"[a-z]+", scope.lower()))
        if words & focus:
            return True
    return False


def word_ends(text: str) -> list[int]:
    """Where each word of `text` ends: the places an answer drawn from it may stop."""
    return [m.end() for m in _WORD.finditer(text)]


def span_starts(question: str, sentence: str, max_words: int = 8) -> list[tuple[int, int]]:
    """Where an answer drawn from `sentence` may start, each with how far it may run: every
    word that is not a stopword or a word of the question, running to the next clause break
    or max_words words on."""
    q_words = set(_norm_words(question))
    words = list(_WORD.finditer(sentence))
    out = []
    for i, w in enumerate(words):
        norm = _norm(w.group())
        if norm in SPAN_STOPWORDS or norm in q_words:
            continue
        out.append((w.start(), _run_end(sentence, words, i, max_words)))
    return out


def _run_end(sentence: str, words: list[re.Match], i: int, max_words: int,
             stop: frozenset[str] = frozenset()) -> int:
    """Where a run of `sentence` starting on words[i] ends: before a clause break, a bracket
    or quotation mark, a word in `stop`, or after max_words words."""
    end = words[i].end()
    for j in range(i + 1, min(len(words), i + max_words)):
        gap = sentence[words[j - 1].end():words[j].start()]
        if _BREAK.search(gap) or _CLAUSE_BREAK.search(gap) or words[j].group().lower() in stop:
            break
        end = words[j].end()
    return end


def distance_to_question(question: str, sentence: str, start: int, end: int) -> int:
    """Words between the run sentence[start:end] and the nearest word of the question in the
    sentence (0 when adjacent; the sentence's length when it holds none): an answer stands
    next to what the question says of it."""
    d = _distance(set(_norm_words(question)) - SPAN_STOPWORDS, sentence, start, end)
    return len(word_ends(sentence)) if d is None else d


def _distance(targets: set[str], sentence: str, start: int, end: int,
              before_only: bool = False) -> int | None:
    """Words between the run sentence[start:end] and the nearest word outside it whose
    normalised form is among `targets` (only those after the run, with before_only); None
    when there is none, or the run holds no word."""
    words = list(_WORD.finditer(sentence))
    inside = [i for i, w in enumerate(words) if start <= w.start() and w.end() <= end]
    if not inside:
        return None
    first, last = inside[0], inside[-1]
    best = None
    for i, w in enumerate(words):
        if (i > last or (i < first and not before_only)) and _norm(w.group()) in targets:
            d = first - i - 1 if i < first else i - last - 1
            best = d if best is None else min(best, d)
    return best


# -- the place a question leaves for its answer ------------------------------------------------

# A preposition a question leaves hanging, its object being what is asked: "praised as ...",
# "closer ties with ...", "what did the Broncos lose to?"
_PREPOSITIONS = frozenset("""as with to for from by of about into onto on in at against toward
towards after over under between among through like than upon""".split())


# the object of the preposition ends where another phrase begins
_SLOT_ENDS = _PREPOSITIONS | {"and", "or", "but", "which", "who", "that", "while", "when",
                              "where", "because", "after", "before"}


def _question_words(question: str) -> tuple[set[str], list[str]]:
    """The question's names (capitalised words past its first, lowered) and its words and
    punctuation in order, lowered: what `dangling` and `gaps` read a question by."""
    names = {w.lower() for w in re.findall(r"(?<!^)\b[A-Z][\w'’-]*", question.strip())}
    return names, re.findall(r"[\w'’-]+|[?.!,;]", question.lower())


def _head_forms(word: str) -> set[str]:
    """The normalised forms a sentence may give a question's word in (`answer_slot`,
    `answer_gap`)."""
    return {_norm(f) for f in _forms(word)} | {_norm(word)}


def dangling(question: str) -> list[tuple[str, str]]:
    """(word, preposition) for each preposition `question` leaves without its object, with the
    content word before it: "What were the soldiers praised as at the ceremony?" ->
    [("praised", "as")]; "Which country has Kim cultivated ties with?" -> [("ties", "with")]."""
    names, words = _question_words(question)
    out = []
    for i in range(1, len(words)):
        prep, before = words[i], words[i - 1]
        after = words[i + 1] if i + 1 < len(words) else "?"
        if prep not in _PREPOSITIONS or before in STOPWORDS or before in _PREPOSITIONS:
            continue
        if before in names:  # "Which plateau is the left part of Warsaw on?": not "Warsaw on"
            continue
        if after in ("?", ".", "!", ",", ";") or after in _PREPOSITIONS:
            out.append((before, prep))
    return out


def answer_slot(question: str, sentence: str, max_words: int = 8) -> tuple[int, int] | None:
    """The run of `sentence` that stands where the question's hanging preposition points:
    "praised as" in the question, "praised them as “great patriots,” and ..." in the sentence
    -> "great patriots". The run starts after the same preposition at most two words after the
    same word, and ends at a clause break, quotation mark or the next preposition; None when
    the sentence has no such place or what stands there the question already says.
    SQuAD even-1000: 24 questions answered so, the slot holding the answer in 14."""
    slots = dangling(question)
    if not slots:
        return None
    words = list(_WORD.finditer(sentence))
    norms = [_norm(w.group()) for w in words]
    for head, prep in slots:
        heads = _head_forms(head)
        for i, n in enumerate(norms):
            if n not in heads:
                continue
            for j in range(i + 1, min(len(words) - 1, i + 4)):
                gap = sentence[words[j - 1].end():words[j].start()]
                if _BREAK.search(gap) or _CLAUSE_BREAK.search(gap):
                    break
                if words[j].group().lower() != prep:
                    continue
                start = words[j + 1].start()
                end = _run_end(sentence, words, j + 1, max_words, _SLOT_ENDS)
                text = sentence[start:end]
                if adds_information(text, question):
                    return start, end
                break
    return None


# -- the gap a question closes over its answer -------------------------------------------------

# particles of phrasal verbs, which a question keeps beside their verb as it keeps a preposition
_PARTICLES = frozenset("up out down off away back".split())
# a run the gap holds does not start on these ("put [him] on the cover": nothing is left)
_PRONOUNS = frozenset("him her them it us me you himself herself itself themselves".split())
# one word alone in the gap that qualifies a verb, not an answer ("the oldest quarterback
# [ever] to play in")
_ADVERBS = frozenset("ever never again also still then now soon first once later even just "
                     "already often".split())
_WH = frozenset("what which who whom whose when where why how".split())
_SUBORDINATE = frozenset("where which who whom whose when while because although".split())
# another phrase begins: the gap's run is not one answer
_GAP_ENDS = frozenset("and or but which who that while when where because".split())


def gaps(question: str) -> list[tuple[str, str, str]]:
    """(word, preposition, next word) for each content word a question keeps right before a
    preposition or particle whose object the question gives (the next word that is not a
    stopword): "What has Kim said North Korea will accelerate efforts to grow as a deterrent?"
    -> [("efforts", "to", "grow"), ("grow", "as", "deterrent")]. Where a sentence puts words
    between the two, the question has left them out (rag.evidence.answer_gap)."""
    names, words = _question_words(question)
    # the question's own clause: a relative or subordinate clause after its wh- word speaks of
    # something else ("What was given to high schools where former students went on to play
    # or coach in a Super Bowl?": not what stands between "coach" and "in")
    wh = next((i for i, w in enumerate(words) if w in _WH), None)
    if wh is not None:
        words = words[:next((i for i in range(wh + 1, len(words)) if words[i] in _SUBORDINATE),
                            len(words))]
    out = []
    for i in range(1, len(words) - 1):
        before, prep = words[i - 1], words[i]
        if prep not in _PREPOSITIONS and prep not in _PARTICLES:
            continue
        if before in STOPWORDS or before in _PREPOSITIONS or before in names:
            continue
        nxt = next((w for w in words[i + 1:i + 4] if w not in STOPWORDS), None)
        if nxt is None or not re.match(r"\w", nxt):
            continue  # "praised as?": a hanging preposition (rag.evidence.dangling)
        out.append((before, prep, nxt))
    return out


def answer_gap(question: str, sentence: str, max_words: int = 8) -> tuple[int, int] | None:
    """The run of `sentence` between two words the question keeps together: "grow as a
    deterrent" in the question, "... accelerate efforts to grow its nuclear weapons stockpile
    as a deterrent against ..." in the sentence -> "nuclear weapons stockpile".

    The sentence must hold the word, then within `max_words` words of one clause the same
    preposition, followed within three words by the question's next word ("deterrent"). The
    run between them, its leading stopwords and pronouns dropped ("its", "him"), must hold no
    other preposition, no conjunction or relative word, no word of the question, and be more
    than one adverb or "-ed"/"-ing"/"-ly" word; None when no such run stands anywhere, and
    for "What kind of ..." questions (their answer qualifies a noun; rag.evidence.focus).
    SQuAD even-2000, short style, the evidence sentence chosen: fires on 12 questions, 9
    answered exactly (the model's answers there: 4; token F1 summed +5.0). Tried there and
    dropped: no check of the next word, of question words, prepositions or conjunctions in
    the run, no filter of one adverb or verb: 65 fired, 18 exact against the model's 24; only
    questions whose wh- word is the object ("What did ... do", "Who has ..."): 6 fired, 5
    exact against 4 (it keeps out "What persons were not allowed to settle in New France?"
    -> "non-Catholics"); pairs in a relative clause of the question too: 13 fired, 9 exact
    against 5, but SQuAD even-300 F1 44.84 -> 44.51 ("appear" for "... where former students
    went on to play or coach in a Super Bowl?"). As kept: SQuAD even-300 and odd-200 (held
    out) fire once each, right as the model was, EM/F1 unchanged."""
    pairs = gaps(question)
    if not pairs or asks_kind_of(question):
        return None
    q_words = set(_norm_words(question))
    words = list(_WORD.finditer(sentence))
    norms = [_norm(w.group()) for w in words]
    for head, prep, nxt in pairs:
        heads = _head_forms(head)
        for i, n in enumerate(norms):
            if n not in heads:
                continue
            if prep == "to" and head in _GIVE_WITH:
                given = _given_with(question, sentence, words, i, max_words)
                if given is not None:
                    return given
            for j in range(i + 1, min(len(words), i + max_words + 2)):
                gap = sentence[words[j - 1].end():words[j].start()]
                if _BREAK.search(gap) or _CLAUSE_BREAK.search(gap) or \
                        words[j].group().lower() in _GAP_ENDS:
                    break
                if words[j].group().lower() != prep:
                    continue
                if j == i + 1 or _norm(nxt) not in norms[j + 1:j + 4]:
                    break  # the sentence keeps them together too, or says something else
                a = i + 1
                while a < j and (norms[a] in SPAN_STOPWORDS or norms[a] in _PRONOUNS):
                    a += 1
                run = norms[a:j]
                if not run or any(w in _PREPOSITIONS or (w in q_words and w not in SPAN_STOPWORDS)
                                  for w in run):
                    break
                if len(run) == 1 and (run[0] in _ADVERBS or words[a].group().lower().endswith(
                        ("ed", "ing", "ly"))):
                    break
                start, end = words[a].start(), words[j - 1].end()
                if adds_information(sentence[start:end], question):
                    return start, end
                break
    return None


# verbs that name what is given either way: "provide X to Y" or "provide Y with X"
_GIVE_WITH = frozenset("provide supply furnish equip arm present entrust reward credit "
                       "outfit endow".split())


def _given_with(question: str, sentence: str, words: list[re.Match], i: int,
                max_words: int) -> tuple[int, int] | None:
    """Where the question asks what is given *to* someone ("What could Russia provide to
    North Korea?") and the sentence gives it the other way round ("Russia could provide
    Pyongyang with advanced technology"), the run after "with": the given thing. The one to
    four words between the verb (words[i]) and "with" must be one phrase, the recipient; the
    run ends at a clause break, a preposition or a conjunction."""
    for j in range(i + 2, min(len(words) - 1, i + 6)):
        gap = sentence[words[j - 1].end():words[j].start()]
        if _BREAK.search(gap) or _CLAUSE_BREAK.search(gap):
            return None
        w = words[j].group().lower()
        if w != "with":
            if w in _PREPOSITIONS or w in _GAP_ENDS:
                return None
            continue
        start = words[j + 1].start()
        end = _run_end(sentence, words, j + 1, max_words, _SLOT_ENDS)
        return (start, end) if adds_information(sentence[start:end], question) else None
    return None


# -- the thing a question asks about -----------------------------------------------------------

_AUX = r"(?:did|do|does|was|were|is|are|has|have|had|will|would|can|could|should|may|might)"
_LEAD = r"^(?:in |on |at |from |to |for |by |with |of |into |about )?(?:what|which)\s+"
_NP_WORD = r"[\w'’.-]+"
_HEADS = [
    # "What kind of missiles did ...", "What type of ballistic missile did ..."
    re.compile(_LEAD + r"(?:kinds?|types?|sorts?|forms?|class(?:es)?)\s+of\s+(?:" + _NP_WORD +
               r"\s+){0,3}?(" + _NP_WORD + r")\s+(?:" + _AUX + r"|\w+ed)\b"),
    # "Which Russian president's forces has ...": the one whose forces
    re.compile(_LEAD + r"(?:" + _NP_WORD + r"\s+){0,3}?([\w-]+)['’]s?\s+" + _NP_WORD + r"\s+"
               + _AUX + r"\b"),
    # "Which country has ...", "In which military systems is ...", "Which agency reported"
    re.compile(_LEAD + r"(?:" + _NP_WORD + r"\s+){0,3}?(" + _NP_WORD + r")\s+(?:" + _AUX +
               r"|\w+ed)\b"),
    # "What long-range missiles capable of ...", "Which team that ...": before what describes it
    re.compile(_LEAD + r"(?:" + _NP_WORD + r"\s+){0,2}?(" + _NP_WORD + r")\s+(?:that|which|"
               r"who|whose|capable|able|designed|meant|intended)\b"),
    # "What is the name of the stadium ...": the stadium
    re.compile(r"^(?:what|which)\s+(?:is|was|are|were)\s+the\s+(?:name|names|title|term)\s+of\s+"
               r"(?:the\s+|a\s+|an\s+)?(?:" + _NP_WORD + r"\s+){0,2}?(" + _NP_WORD +
               r")(?:\s*\?|\s*$|\s+(?:that|which|who|where|in|of|for|at|on|to|[a-z]+ed)\b)"),
    # "Who is the president of South Korea?"
    re.compile(r"^(?:who|what)\s+(?:is|was|are|were)\s+the\s+(?:" + _NP_WORD + r"\s+){0,2}?("
               + _NP_WORD + r")\s+(?:of|for|in|at|on|to|that|who|which)\b"),
]
# words that frame what is asked rather than name it
_NOT_FOCUS = frozenset("kind kinds type types sort sorts form forms name names many much "
                       "one ones".split())


def focus(question: str) -> str | None:
    """The noun a wh- question asks about, which the answer names or qualifies and stands
    next to: "What kind of missiles did ..." -> "missiles"; "Who is the president of South
    Korea?" -> "president"; "Which Russian president's forces ..." -> "president"."""
    q = question.strip().lower()
    for i, pattern in enumerate(_HEADS):
        m = pattern.match(q)
        if m:
            lead = q[:m.start(1)].split()[1:]
            if i < 4 and any(re.fullmatch(_AUX, w) for w in lead):  # "what were the ..."
                continue
            word = m.group(1).strip(".")
            if word in STOPWORDS or word in _NOT_FOCUS:
                return None
            return word
    return None


def holds_word(sentence: str, word: str) -> bool:
    return _norm(word) in _norm_words(sentence)


def asks_kind_of(question: str) -> bool:
    """ "What kind of missiles ...": the answer qualifies the noun, standing before it."""
    return _HEADS[0].match(question.strip().lower()) is not None


def distance_to_word(word: str, sentence: str, start: int, end: int,
                     before_only: bool = False) -> int | None:
    """Words between the run sentence[start:end] and the nearest occurrence of `word` (0 when
    adjacent or when the run ends on it); None when the sentence does not hold it (after the
    run, with before_only: the run must come before the word, as a qualifier does)."""
    ends = [m for m in _WORD.finditer(sentence[start:end])]
    if ends and _norm(ends[-1].group()) == _norm(word):
        return 0
    return _distance({_norm(word)}, sentence, start, end, before_only)


# -- a question asking for a name ---------------------------------------------------------------

_NAME_QUESTION = re.compile(
    r"^(?:what|which)\s+(?:is|was|are|were)\s+the\s+(?:names?|designations?|titles?)"
    r"(?:\s+or\s+\w+)?\s+of\s+(?:the\s+|a\s+|an\s+)?([^?]*)", re.I)
_NAME_STOP = re.compile(r"\b(?:that|which|who|whom|where|when|in|on|at|for|to|by|from|with|"
                        r"during|is|was|are|were|did|does|do|has|have|had)\b")


def name_asked(question: str) -> str | None:
    """The noun whose name a question asks for: "What is the name or designation of the new
    anti-air missiles North Korea tested?" -> "missiles"; "What is the name of the stadium
    where ..." -> "stadium". The noun is the last word of its phrase, before a clause, a
    preposition or a capitalised name."""
    m = _NAME_QUESTION.match(question.strip())
    if not m:
        return None
    phrase = _NAME_STOP.split(m.group(1), maxsplit=1)[0]
    head = None
    for w in re.findall(r"[\w'’-]+", phrase):
        if w[:1].isupper() and head is not None:
            break
        head = w.lower()
    return head if head and head not in STOPWORDS else None


def _headline(sentence: str) -> bool:
    """Whether a sentence reads as a headline (no closing full stop, most of its longer words
    capitalised): its capitals then tell nothing of what is a name."""
    if re.search(r"[.!?][”\"’')\]]*$", sentence.rstrip()):
        return False
    longer = [w for w in re.findall(r"[A-Za-z][\w'’-]*", sentence) if len(w) >= 4]
    return bool(longer) and sum(w[0].isupper() for w in longer) / len(longer) >= 0.5


def gives_name(question: str, sentence: str, reach: int = 6) -> bool:
    """Whether `sentence` can answer a question asking for a name: when it mentions the thing
    named, a name (a capitalised word that does not begin the sentence, a word with a digit,
    or a quoted term) the question does not hold stands within `reach` words of it in its
    clause; when it does not mention it, anywhere. True for questions that ask for no name."""
    head = name_asked(question)
    if head is None:
        return True
    q_words = set(_norm_words(question))
    words = list(_WORD.finditer(sentence))
    capitals_tell = not _headline(sentence)
    quoted = [(m.start(), m.end()) for m in re.finditer(r"[“\"‘][^”\"’]{1,60}[”\"’]", sentence)]

    def is_name(i: int) -> bool:
        w = words[i]
        text = w.group()
        if _norm(text) in q_words or _norm(text) in SPAN_STOPWORDS:
            return False
        if any(ch.isdigit() for ch in text) or any(a <= w.start() < b for a, b in quoted):
            return True
        return capitals_tell and i > 0 and text[:1].isupper()

    parts = clauses(sentence)

    def clause_of(i: int) -> int:
        return next((k for k, (a, b) in enumerate(parts)
                     if a <= words[i].start() < b), -1)

    at = [i for i, w in enumerate(words) if _norm(w.group()) == _norm(head)]
    if not at:
        return any(is_name(i) for i in range(len(words)))
    return any(is_name(j) for i in at
               for j in range(max(0, i - reach), min(len(words), i + reach + 1))
               if j != i and clause_of(j) == clause_of(i))


# -- a quoted term is answered whole -------------------------------------------------------------

_QUOTATION = re.compile(r"“([^”“]{1,80})”|\"([^\"]{1,80})\"")


def whole_quotation(sentence: str, start: int, end: int, max_words: int = 8
                    ) -> tuple[int, int]:
    """(start, end) grown to the whole of the quotation it stands in: a term the source puts in
    quotation marks is one answer ("“hostile and confrontational” actions": not
    "confrontational"). Unchanged when the run is not inside a quotation, or the quotation
    runs longer than `max_words` words (a quoted statement, not a term)."""
    for m in _QUOTATION.finditer(sentence):
        a, b = m.span(1) if m.group(1) is not None else m.span(2)
        if a <= start and end <= b and (a, b) != (start, end):
            inner = sentence[a:b]
            if len(inner.split()) > max_words:
                break
            # the marks' own punctuation ("“great patriots,”") stays outside the answer
            while b > a and sentence[b - 1] in ",.;: ":
                b -= 1
            while a < b and sentence[a] == " ":
                a += 1
            return (a, b) if a <= start and end <= b else (start, end)
    return start, end


# -- "Besides X, who else ...": the answer stands in a list with X --------------------------------

_BESIDES = re.compile(r"\b(?:besides|apart from|aside from|other than|in addition to|"
                      r"as well as|along with)\s+([^,?]+)", re.I)
_JOINED = re.compile(r"^\s*(?:,\s*)?(?:and|or|as well as|along with|plus)?\s*$", re.I)


def besides(question: str) -> set[str]:
    """The words of what a question sets aside ("Besides construction workers, who else ..."
    -> {"construction", "worker"}): the answer is another item of the list that holds it."""
    m = _BESIDES.search(question)
    return set(_norm_words(m.group(1))) - SPAN_STOPWORDS if m else set()


def listed_with(words: set[str], sentence: str, start: int, end: int) -> bool:
    """Whether the run sentence[start:end] stands in a list beside a run of `words` ("workers
    and deminers", "deminers, workers"), holding none of them."""
    found = [(m.start(), m.end()) for m in _WORD.finditer(sentence) if _norm(m.group()) in words]
    if not found or any(start <= a < end for a, _ in found):
        return False
    before = [b for _, b in found if b <= start]
    after = [a for a, _ in found if a >= end]
    return bool(before and _JOINED.match(sentence[max(before):start])) or \
        bool(after and _JOINED.match(sentence[end:min(after)]))


# -- a bare noun is answered with the words that qualify it ---------------------------------------

def with_modifiers(question: str, sentence: str, start: int, end: int, limit: int = 2
                   ) -> tuple[int, int]:
    """(start, end) grown leftwards over the lower-case words that qualify a run beginning on
    a lower-case word ("missiles" -> "ballistic missiles", "technology" -> "advanced
    technology"): only across single spaces, never over a stopword, a word of the question or
    an adverb, at most `limit` words."""
    if not sentence[start:start + 1].islower() or re.match(_NUMBER_WORDS, sentence[start:end]):
        return start, end
    q_words = set(_norm_words(question))
    for _ in range(limit):
        m = re.search(r"(?:^|(?<=\s))([a-z][a-z\-]*) $", sentence[:start])
        if m is None:
            break
        word = m.group(1)
        if _norm(word) in SPAN_STOPWORDS or _norm(word) in q_words or word in _OPEN_ENDED \
                or word.endswith(("ly", "ing", "ed")) or word in _FORMS or word in _PREPOSITIONS:
            break
        start = m.start(1)
    return start, end


def names_only(sentence: str, start: int, end: int) -> bool:
    """Whether the run sentence[start:end] is names alone: every word capitalised (or a figure)
    and the run not opening the sentence, where any word is."""
    words = _WORD.findall(sentence[start:end])
    if not words or not sentence[:start].strip():
        return False
    return all(w[:1].isupper() or w[:1].isdigit() for w in words)
