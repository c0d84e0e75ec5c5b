"""Documents -> Chunks: whole sentences, sized in the embedding model's tokens, optionally
overlapping (Settings.chunk_overlap_sentences).

Pure and deterministic: the same document always gives the same ids, offsets and text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

from rag.types import Chunk, Document

TokenCounter = Callable[[Sequence[str]], list[int]]

MAX_CHARS_PER_TOKEN = 12  # no piece holds more than budget * this many characters
COUNT_BATCH = 2048
_WORD = re.compile(r"\S+")

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before white space,
# or at a line break. Abbreviations like "U.S." stay whole: the next word must not be lower case.
# Hasty text starts sentences in lower case too ("... for Russian assistance. in November, ..."):
# a full stop after a plain lower-case word of three or more letters ends one whatever follows,
# unless that word is an abbreviation ("etc.", "approx.").
# Written to start with the one character every end begins with, so the scan skips other
# characters at once (the same matches as the three alternatives each written whole, 5x faster:
# it splits the passages of every search, rag.retrieve.rerank_by_sentence).
_SENTENCE_END = re.compile(r"""[.!?\n](?:(?<=[.!?])["'”’)\]]*\s+(?=["'“‘(\[]?[A-Z0-9])"""
                           r"""|(?<=\n)\s*|(?<=[a-z]{3}\.)\s+(?=[a-z]))""")
_ABBREVIATIONS = re.compile(r"\b(?:[A-Z]\.){1,3}$|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Gen|Lt|Col|No|vs)\.$"
                            r"|(?i:\b(?:etc|approx|esp|incl|dept|est|fig|figs|vol|ibid|sept|corp|ltd|"
                            r"govt|bros|mfg|misc|cont|pts)\.$)")
_ABBREVIATION_TAIL = 12  # longer than any abbreviation above, so the window start never matters


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Character spans of the sentences in text[start:end], stripped of surrounding space."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for m in _SENTENCE_END.finditer(text, start, end):
        # an abbreviation is at most a few characters: look at the tail only, so a long run of
        # them ("Mr. A Mr. B ...") stays linear
        tail = text[max(cursor, m.start() - _ABBREVIATION_TAIL):m.start() + 1]
        if m.group().strip() and _ABBREVIATIONS.search(tail):
            continue
        _add_span(text, cursor, m.end(), spans)
        cursor = m.end()
    _add_span(text, cursor, end, spans)
    return spans


def _add_span(text: str, a: int, b: int, spans: list[tuple[int, int]]) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if b > a:
        spans.append((a, b))


def _words(text: str, a: int, b: int, max_chars: int, cut: int) -> Iterator[tuple[int, int]]:
    """Words of text[a:b]; a word longer than max_chars (a data URI, a hex dump) comes in
    pieces of `cut` characters."""
    for m in _WORD.finditer(text, a, b):
        ws, we = m.span()
        if we - ws <= max_chars:
            yield ws, we
            continue
        for p in range(ws, we, cut):
            yield p, min(p + cut, we)


def _split_long(text: str, span: tuple[int, int], budget: int,
                count: TokenCounter) -> Iterator[tuple[int, int, int]]:
    """Cut an over-long sentence at word boundaries into pieces within the token budget:
    (start, end, tokens). Words are counted in batches and packed by the sum of their counts,
    so a 10 MB line costs time in proportion to its length and memory in proportion to one
    batch of words."""
    a, b = span
    max_chars = budget * MAX_CHARS_PER_TOKEN
    cut = max(1, budget // 4)  # so many characters are within budget for any tokenizer
    words = _words(text, a, b, max_chars, cut)
    ahead: list[tuple[int, int, int]] = []  # (start, end, tokens) of the words to come
    exhausted = False
    while True:
        if len(ahead) < budget and not exhausted:
            batch = list(islice(words, COUNT_BATCH))
            exhausted = len(batch) < COUNT_BATCH
            if batch:
                ahead.extend((ws, we, n) for (ws, we), n in
                             zip(batch, count([text[ws:we] for ws, we in batch])))
        if not ahead:
            return
        first, total, take = ahead[0][0], 0, 0
        for _, we, n in ahead:
            if take and (total + n > budget or we - first > max_chars):
                break
            total, take = total + n, take + 1
        if take == 1 and ahead[0][2] > budget:  # one word over budget (CJK without spaces)
            ws, we, _ = ahead.pop(0)
            pieces = [(p, min(p + cut, we)) for p in range(ws, we, cut)]
            ahead[:0] = [(ps, pe, n) for (ps, pe), n in
                         zip(pieces, count([text[ps:pe] for ps, pe in pieces]))]
            continue
        end = ahead[take - 1][1]
        del ahead[:take]
        yield first, end, total  # exact for WordPiece; chunk_document re-counts each chunk


def _split_at_pages(doc: Document, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """No sentence crosses into the next page, so every chunk lies on one page."""
    out = []
    for a, b in spans:
        while doc.page_at(a) != doc.page_at(b - 1):
            cut = doc.pages[doc.page_at(a)]  # where the next page begins
            _add_span(doc.text, a, cut, out)
            a = cut
        _add_span(doc.text, a, b, out)
    return out


def _counts(text: str, spans: list[tuple[int, int]], count: TokenCounter,
            max_chars: int) -> list[int]:
    """Token counts, in slices so the tokenizer never holds a whole book at once; a span longer
    than max_chars is over any budget and not counted (it is split anyway)."""
    out: list[int] = []
    for i in range(0, len(spans), COUNT_BATCH):
        part = spans[i:i + COUNT_BATCH]
        short = [j for j, (a, b) in enumerate(part) if b - a <= max_chars]
        counted = count([text[part[j][0]:part[j][1]] for j in short]) if short else []
        n = [max_chars + 1] * len(part)  # max_chars > budget tokens: marks "split me"
        for j, c in zip(short, counted):
            n[j] = c
        out.extend(n)
    return out


def chunk_document(doc: Document, count: TokenCounter, max_tokens: int,
                   overlap_sentences: int = 0, hard_limit: int | None = None) -> list[Chunk]:
    """Pack whole sentences into chunks of at most max_tokens, carrying the last
    `overlap_sentences` of each chunk into the next. No chunk exceeds hard_limit tokens, and
    in a paged document (PDF) no chunk crosses a page: its page is in its id and metadata."""
    hard_limit = hard_limit or max_tokens
    budget = min(max_tokens, hard_limit)
    max_chars = budget * MAX_CHARS_PER_TOKEN
    text = doc.text
    spans = split_sentences(text)
    if doc.pages:
        spans = _split_at_pages(doc, spans)
    if not spans:
        return []
    units: list[tuple[int, int, int]] = []
    for (a, b), n in zip(spans, _counts(text, spans, count, max_chars)):
        if n <= budget:
            units.append((a, b, n))
        else:
            units.extend(_split_long(text, (a, b), budget, count))

    groups: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    for unit in units:
        # joining sentences costs roughly nothing extra in WordPiece tokens
        new_page = bool(current) and doc.page_at(current[0][0]) != doc.page_at(unit[0])
        if current and (new_page or sum(u[2] for u in current) + unit[2] > budget
                        or unit[1] - current[0][0] > max_chars):
            groups.append(current)
            carried = current[-overlap_sentences:] if overlap_sentences and not new_page else []
            while carried and (sum(u[2] for u in carried) + unit[2] > budget
                               or unit[1] - carried[0][0] > max_chars):
                carried = carried[1:]
            current = list(carried)
        current.append(unit)
    if current:
        groups.append(current)

    chunks = []
    prefix = doc.sha256[:12]
    spans = [(g[0][0], g[-1][1]) for g in groups]
    for i, (group, (a, b), n) in enumerate(zip(groups, spans, _counts(text, spans, count,
                                                                     max_chars))):
        page = doc.page_at(a)
        base = f"{prefix}-{i:04d}" if page is None else f"{prefix}-p{page}-{i:04d}"
        if n > hard_limit:  # the space between units cost tokens: fall back to one unit each
            for j, (ua, ub, un) in enumerate(group):
                chunks.append(Chunk(f"{base}.{j}", doc.source, ua, ub, text[ua:ub], un, page))
            continue
        chunks.append(Chunk(base, doc.source, a, b, text[a:b], n, page))
    return chunks


def neighbour_contexts(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """For each chunk of `text` (its (start, end), in document order), the text of its
    neighbours that it does not hold itself: the previous chunk up to where this one starts,
    and the next chunk from where this one ends. Indexed beside each chunk, so that a question
    whose words are spread over a passage still finds the chunk that answers it."""
    out = []
    for i, (a, b) in enumerate(spans):
        before = text[min(spans[i - 1][0], a):a] if i else ""
        after = text[b:max(spans[i + 1][1], b)] if i + 1 < len(spans) else ""
        out.append(f"{before.strip()}\n{after.strip()}".strip())
    return out
