"""Documents -> Chunks: sentence-aware, overlapping, sized in the embedding model's tokens.

Pure and deterministic: the same document always gives the same ids, offsets and text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.types import Chunk, Document

TokenCounter = Callable[[Sequence[str]], list[int]]

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before white space,
# or at a line break. Abbreviations like "U.S." stay whole: the next word must not be lower case.
_SENTENCE_END = re.compile(r"""[.!?]["'”’)\]]*\s+(?=["'“‘(\[]?[A-Z0-9])|\n\s*""")
_ABBREVIATIONS = re.compile(r"\b(?:[A-Z]\.){1,3}$|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Gen|Lt|Col|No|vs)\.$")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Character spans of the sentences in text[start:end], stripped of surrounding space."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for m in _SENTENCE_END.finditer(text, start, end):
        candidate = text[cursor:m.start() + 1]
        if m.group().strip() and _ABBREVIATIONS.search(candidate.rstrip()):
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


def _split_long(text: str, span: tuple[int, int], budget: int,
                count: TokenCounter) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word boundaries into pieces within the token budget."""
    a, b = span
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[a:b])]
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        lo, hi = i + 1, len(words)
        # binary search the longest run of words from i that fits the budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count([text[a + words[i][0]:a + words[mid - 1][1]]])[0] <= budget:
                lo = mid
            else:
                hi = mid - 1
        pieces.append((a + words[i][0], a + words[lo - 1][1]))
        i = lo
    return pieces


def chunk_document(doc: Document, count: TokenCounter, max_tokens: int,
                   overlap_sentences: int = 1, hard_limit: int | None = None) -> list[Chunk]:
    """Pack whole sentences into chunks of at most max_tokens, carrying the last
    `overlap_sentences` of each chunk into the next. No chunk exceeds hard_limit tokens."""
    hard_limit = hard_limit or max_tokens
    budget = min(max_tokens, hard_limit)
    text = doc.text
    spans = split_sentences(text)
    if not spans:
        return []
    counts = count([text[a:b] for a, b in spans])
    units: list[tuple[int, int, int]] = []
    for (a, b), n in zip(spans, counts):
        if n <= budget:
            units.append((a, b, n))
        else:
            pieces = _split_long(text, (a, b), budget, count)
            units.extend((pa, pb, c) for (pa, pb), c in
                         zip(pieces, count([text[pa:pb] for pa, pb in pieces])))

    groups: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    for unit in units:
        # joining sentences costs roughly nothing extra in WordPiece tokens
        if current and sum(u[2] for u in current) + unit[2] > budget:
            groups.append(current)
            carried = current[-overlap_sentences:] if overlap_sentences else []
            while carried and sum(u[2] for u in carried) + unit[2] > budget:
                carried = carried[1:]
            current = list(carried)
        current.append(unit)
    if current:
        groups.append(current)

    chunks = []
    prefix = doc.sha256[:12]
    for i, group in enumerate(groups):
        a, b = group[0][0], group[-1][1]
        piece = text[a:b]
        n = count([piece])[0]
        if n > hard_limit:  # the space between units cost tokens: fall back to one unit each
            for j, (ua, ub, un) in enumerate(group):
                chunks.append(Chunk(f"{prefix}-{i:04d}.{j}", doc.source, ua, ub, text[ua:ub], un))
            continue
        chunks.append(Chunk(f"{prefix}-{i:04d}", doc.source, a, b, piece, n))
    return chunks
