"""Numbers passages, parses [n] markers and checks that each one resolves."""

from __future__ import annotations

import re

from rag.types import Citation

_MARKER = re.compile(r"\[(\d+)\]")


def markers(text: str) -> list[int]:
    return [int(m) for m in _MARKER.findall(text)]


def strip_markers(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def unresolved(text: str, citations: list[Citation] | tuple[Citation, ...]) -> list[int]:
    """Markers in text with no citation entry."""
    known = {c.n for c in citations}
    return [n for n in markers(text) if n not in known]


def verbatim(citation: Citation, document_text: str) -> bool:
    """The citation's text stands exactly at its offsets in the source."""
    return document_text[citation.start:citation.end] == citation.text


def renumber(text: str, mapping: dict[int, int]) -> str:
    return _MARKER.sub(lambda m: f"[{mapping.get(int(m.group(1)), int(m.group(1)))}]", text)
