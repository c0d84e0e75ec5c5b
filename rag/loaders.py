"""Files -> Documents: one file is read (bounded) and handed to its format's reader
(rag.formats); a JSON Lines file is read here, record by record. Which files a folder holds is
rag.discovery's.

Every input is untrusted. Only regular files are opened, sizes are checked before anything is
read or unpacked, reads are bounded, and whatever goes wrong becomes an InputRefused that names
the file and gives a one-line reason, never a crash and never a hang on a pipe or a device.

Formats: plain text and Markdown in any common encoding, HTML (the main text), PDF (text per
page; the page offsets travel with the Document), Word .docx, and JSON Lines, where each record
with a "text" field is a document whose source is "file.jsonl#id".
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from rag.display import no_surrogates, source_name
from rag.errors import InputRefused
from rag.formats import (
    MAX_DOCUMENT_CHARS,
    MB,
    MiB,
    decode_text,
    one_line,
    read_docx,
    read_html,
    read_pdf,
    size,
)
from rag.types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
DOCX_SUFFIXES = {".docx"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | DOCX_SUFFIXES | JSONL_SUFFIXES

# Limits keep memory bounded (bench/hostile_rss.py measures peak RSS). A text file over
# MAX_TEXT_BYTES is ~5 million words: split it, or raise the limit. (The limits on what a
# .docx unpacks to and on a document's text are rag.formats'.)
MAX_TEXT_BYTES = 32 * MB  # .txt, .md, .html
MAX_PACKED_BYTES = 256 * MB  # .pdf, .docx as files on disk
MAX_RECORD_BYTES = 32 * MB  # .jsonl: one line
READ_BLOCK = 1 * MiB

_NON_SPACE = re.compile(rb"\S")


def os_reason(e: OSError) -> str:
    """Why a file could not be opened or read, in one line."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "cannot be read: it no longer exists (deleted during the ingest?)"
    return f"cannot be read ({(e.strerror or str(e)).lower()})"


def unsupported(path: Path) -> str:
    """Why a file of another type is refused, in one line."""
    return (f"unsupported file type {path.suffix or '(none)'!r}; "
            f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")


# -- reading ---------------------------------------------------------------------------------

def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_all(path: Path) -> Iterator[Document | InputRefused]:
    """Every document in one file, in order. A JSON Lines file gives one per record and an
    InputRefused for each record that cannot be used; other files give exactly one Document,
    or one InputRefused for the whole file. Never raises for a bad input."""
    suffix = path.suffix.lower()
    try:
        if suffix in JSONL_SUFFIXES:
            yield from _jsonl(path)
        else:
            yield load(path)
    except InputRefused as e:
        yield e


def load(path: Path) -> Document:
    """Read one single-document file. Raises InputRefused naming the file and the reason."""
    shown = str(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        raise InputRefused(shown, "a JSON Lines file holds many documents: read it with load_all")
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputRefused(shown, unsupported(path))
    limit = MAX_PACKED_BYTES if suffix in PDF_SUFFIXES | DOCX_SUFFIXES else MAX_TEXT_BYTES
    data = _read_bounded(path, limit)
    if not _NON_SPACE.search(data):
        raise InputRefused(shown, "empty file")
    pages: tuple[int, ...] = ()
    meta_title = ""
    try:
        if suffix in PDF_SUFFIXES:
            text, pages, meta_title = read_pdf(data, shown)
        elif suffix in DOCX_SUFFIXES:
            text, meta_title = read_docx(data, shown)
        elif suffix in HTML_SUFFIXES:
            text, meta_title = read_html(data, shown)
        else:
            text = decode_text(data, shown)
    except (InputRefused, MemoryError):  # MemoryError: the worker's budget (rag.sandbox)
        raise
    except Exception as e:  # third-party parsers raise anything on a damaged file
        raise InputRefused(shown, f"could not be read as {suffix[1:].upper()} "
                                  f"({one_line(e)})") from e
    text = _clean(text, shown)
    title = no_surrogates(meta_title.strip()[:120]) or _title(text, path)
    return Document(source=source_name(shown), title=title, text=text,
                    sha256=file_sha256(data), pages=pages)


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit` of them, as they stood for the whole read."""
    shown = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputRefused(shown, os_reason(e)) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InputRefused(shown, "not a regular file (a pipe, device or socket)")
        if before.st_size > limit:
            raise InputRefused(shown, f"file is {size(before.st_size)}, over the "
                                      f"{size(limit)} limit for one file: split it")
        parts, total = [], 0
        while True:
            block = os.read(fd, READ_BLOCK)
            if not block:
                break
            total += len(block)
            if total > limit:
                raise InputRefused(shown, f"grew past the {size(limit)} limit while being read")
            parts.append(block)
        after = os.fstat(fd)
    except OSError as e:
        raise InputRefused(shown, os_reason(e)) from None
    finally:
        os.close(fd)
    if after.st_nlink == 0:
        raise InputRefused(shown, "deleted while being read")
    if after.st_size != total or after.st_mtime_ns != before.st_mtime_ns:
        raise InputRefused(shown, "changed while being read: ingest it again")
    return b"".join(parts)


def _clean(text: str, shown: str) -> str:
    """The stored text: NUL (which SQLite's text functions stop at) and lone surrogates
    (which UTF-8 cannot hold: a PDF font's map, a JSON "\\ud800") become U+FFFD, length kept,
    so offsets into the extracted text stay exact."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InputRefused(shown, f"holds {len(text) // MB} million characters of text, over "
                                  f"the {MAX_DOCUMENT_CHARS // MB} million limit for one "
                                  "document")
    if not text.strip():
        raise InputRefused(shown, "no text in file")
    return no_surrogates(text.replace("\x00", "\ufffd"))


def _title(text: str, path: Path) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return no_surrogates(line[:120])
    return no_surrogates(path.stem)


# -- JSON Lines ------------------------------------------------------------------------------

def _jsonl(path: Path) -> Iterator[Document | InputRefused]:
    """One Document per record {"text": ..., "id"?, "title"?, "url"?, "metadata"?}; a record
    without an id is named by its line number. Streamed: the file may be of any size."""
    shown = str(path)
    try:
        fh = open(path, "rb", buffering=READ_BLOCK)
    except OSError as e:
        raise InputRefused(shown, os_reason(e)) from None
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InputRefused(shown, "not a regular file (a pipe, device or socket)")
        seen: dict[str, int] = {}
        n_records = n_refused = lineno = 0
        while True:
            try:
                line = fh.readline(MAX_RECORD_BYTES + 1)
            except OSError as e:
                raise InputRefused(shown, os_reason(e)) from None
            if not line:
                break
            lineno += 1
            where = f"{shown}:{lineno}"
            if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest of this line
                    line = fh.readline(READ_BLOCK)
                n_refused += 1
                yield InputRefused(where, f"record longer than {size(MAX_RECORD_BYTES)}")
                continue
            if not line.strip():
                continue
            result = _record(line, lineno, shown, seen)
            if isinstance(result, Document):
                n_records += 1
            else:
                n_refused += 1
                result = InputRefused(where, result)
            yield result
    if n_records == 0 and n_refused == 0:
        raise InputRefused(shown, "empty file")


def _record(line: bytes, lineno: int, shown: str, seen: dict[str, int]) -> Document | str:
    """A Document, or the reason the record was refused."""
    try:
        obj = json.loads(line.decode("utf-8-sig" if lineno == 1 else "utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 (JSON Lines must be UTF-8)"
    except ValueError as e:
        return f"not valid JSON ({one_line(e)})"
    except RecursionError:
        return "JSON nested too deeply to read"
    if not isinstance(obj, dict):
        return "not a JSON object"
    text = obj.get("text")
    if not isinstance(text, str):
        return 'no "text" field holding a string'
    if not text.strip():
        return 'empty "text"'
    if len(text) > MAX_DOCUMENT_CHARS:
        return f'"text" over the {MAX_DOCUMENT_CHARS // MB} million character limit'
    rid = obj.get("id")
    try:
        rid = str(lineno) if rid is None or str(rid).strip() == "" else str(rid).strip()
    except (RecursionError, ValueError):  # an id nested deep, or an int of 5,000 digits
        return '"id" is not a string or number that can be written'
    rid = no_surrogates(rid)
    if rid in seen:
        return f"duplicate id {rid!r} (first on line {seen[rid]})"
    seen[rid] = lineno
    title = obj.get("title")
    url = obj.get("url")
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        try:  # as stored: JSON, lone surrogates as U+FFFD
            metadata = json.loads(no_surrogates(json.dumps(metadata, ensure_ascii=False)))
        except (RecursionError, ValueError):
            return '"metadata" nested too deeply to store'
    name = source_name(shown)
    return Document(
        source=f"{name}#{rid}",
        title=no_surrogates(title.strip()[:120] if isinstance(title, str) and title.strip()
                            else _title(text, Path(shown))),
        text=no_surrogates(text.replace("\x00", "\ufffd")),
        sha256=file_sha256(line.strip()),
        file=name,
        url=no_surrogates(url) if isinstance(url, str) else "",
        metadata=metadata if isinstance(metadata, dict) else {},
    )
