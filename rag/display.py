"""Untrusted text made safe to put on a terminal, and file names made safe to store.

Documents, file names, JSON Lines ids, questions and model output may hold escape sequences
(ESC [2J clears the screen, ESC ] 0;... BEL retitles the window), bare carriage returns that
overwrite what was printed, other C0/C1 controls, and lone surrogates that no terminal
encoding can write. Everything printed for a person goes through `printable`, which shows each
such character as a visible escape (``\\x1b``); the stored text and ``--json`` stay exact.

File names are stored by `source_name`: one name per path (so two inputs never share one), a
string SQLite can hold even for a name that is not UTF-8, and `path_of` turns it back into the
path."""

from __future__ import annotations

import json
import re

# C0 controls but tab and newline, DEL, C1 controls, lone surrogates
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# on one line (a name, a refusal): newlines and tabs too, and the Unicode line breaks
_UNSAFE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _escape(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (Python's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, one_line: bool = False) -> str:
    """`text` as it may be shown on a terminal: controls and lone surrogates as visible
    escapes; with `one_line`, newlines and tabs too, so a name cannot split a message."""
    text = str(text)
    pattern = _UNSAFE_LINE if one_line else _UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def json_text(obj: object) -> str:
    """`obj` as one JSON text, exact and always writable as UTF-8: characters as themselves,
    except lone surrogates, written as JSON's own \\uXXXX escapes."""
    text = json.dumps(obj, ensure_ascii=False)
    if _SURROGATES.search(text):
        text = _SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def no_surrogates(text: str) -> str:
    """`text` with each lone surrogate (from a PDF font's map, a JSON "\\ud800") as U+FFFD:
    the same length, so offsets into it stay exact, and storable as UTF-8."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


# -- names -----------------------------------------------------------------------------------

_NAME_SPECIAL = re.compile(r"[\\#\udc80-\udcff]")
_NAME_ESCAPE = re.compile(r"\\(\\|#|x[0-9a-f]{2})")


def source_name(path: str) -> str:
    """The name a file is stored and shown by: its path as it is, unless the path holds a
    backslash, a "#" or bytes that are not UTF-8; then each backslash is doubled, each "#"
    written "\\#" and each such byte "\\xNN". So a file's name never reads as a JSON Lines
    record's ("file.jsonl#id", whose "#" is bare), no two paths share a name, and `path_of`
    gives the path back."""
    if not _NAME_SPECIAL.search(path):
        return path

    def escape(m: re.Match) -> str:
        c = m.group()
        return "\\" + c if c in "\\#" else f"\\x{ord(c) - 0xDC00:02x}"

    return _NAME_SPECIAL.sub(escape, path)


def path_of(name: str) -> str:
    """The path (as Python holds it, undecodable bytes as surrogates) a `source_name` stands
    for; a record's name gives its file's path and "#id"."""
    if "\\" not in name:
        return name

    def unescape(m: re.Match) -> str:
        c = m.group(1)
        return chr(0xDC00 + int(c[1:], 16)) if c.startswith("x") else c

    return _NAME_ESCAPE.sub(unescape, name)


# A question is read up to this many characters, cut at a word: a page pasted as a question
# (125 KB took 33 s) asks nothing its first few hundred words do not.
MAX_QUESTION_CHARS = 8_000


def fit_question(text: str) -> str:
    """`text` as a question is read (`rag ask`, `search`, `chat`, `eval` alike): at most
    MAX_QUESTION_CHARS, cut at a word."""
    if len(text) <= MAX_QUESTION_CHARS:
        return text
    cut = text.rfind(" ", 0, MAX_QUESTION_CHARS + 1)
    return text[:cut if cut > MAX_QUESTION_CHARS // 2 else MAX_QUESTION_CHARS]
