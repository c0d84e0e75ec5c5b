"""Files -> Documents. All knowledge of file formats lives here.

Every input is untrusted. Only regular files are opened, sizes are checked before anything is
read or unpacked, reads are bounded, and whatever goes wrong becomes an InputRefused that names
the file and gives a one-line reason, never a crash and never a hang on a pipe or a device.

Formats: plain text and Markdown in any common encoding, HTML (the main text), PDF (text per
page; the page offsets travel with the Document), Word .docx, and JSON Lines, where each record
with a "text" field is a document whose source is "file.jsonl#id".
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

from rag.display import no_surrogates, source_name
from rag.errors import InputRefused
from rag.types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
DOCX_SUFFIXES = {".docx"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | DOCX_SUFFIXES | JSONL_SUFFIXES

MB = 10**6  # sizes are told to people in MB, as file managers show them
MiB = 2**20
# Limits keep memory bounded (bench/hostile_rss.py measures peak RSS). A text file over
# MAX_TEXT_BYTES is ~5 million words: split it, or raise the limit.
MAX_TEXT_BYTES = 32 * MB  # .txt, .md, .html
MAX_PACKED_BYTES = 256 * MB  # .pdf, .docx as files on disk
MAX_UNPACKED_BYTES = 256 * MB  # .docx: all parts, as declared by the zip, before unpacking
MAX_XML_PART_BYTES = 64 * MB  # .docx: one XML part, parsed into a tree
# .docx: an XML part over MAX_XML_INFLATE_FROM may inflate at most this many times its packed
# size (Word's own: 5-15x; 95 KB holding 20 MB of XML took 764 MB to parse)
MAX_XML_INFLATION = 100
MAX_XML_INFLATE_FROM = 4 * MB
MAX_RECORD_BYTES = 32 * MB  # .jsonl: one line
MAX_DOCUMENT_CHARS = 32 * MB  # extracted text of any one document, in characters
READ_BLOCK = 1 * MiB

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_NON_SPACE = re.compile(rb"\S")


# -- discovery -------------------------------------------------------------------------------

def discover(paths: list[str | Path]) -> tuple[list[Path], list[InputRefused]]:
    """Expand files and folders (recursively, following symlinks but never around a loop) into
    the supported files they hold, sorted and without duplicates."""
    found: list[Path] = []
    refused: list[InputRefused] = []
    visited: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        try:
            st = path.stat()
        except OSError as e:
            refused.append(_os_refusal(str(raw), e, _missing_reason(path, e)))
            continue
        if stat.S_ISDIR(st.st_mode):
            found.extend(_walk(path, visited, refused))
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            _add_file(path, st, found, refused)
        else:
            refused.append(InputRefused(str(raw), _unsupported(path)))
    return sorted(set(found)), refused


def _add_file(path: Path, st: os.stat_result, found: list[Path],
              refused: list[InputRefused]) -> None:
    """A file, or a link to one, named as the user named it when it cannot be used."""
    real = Path(os.path.realpath(path))
    if not stat.S_ISREG(st.st_mode):
        refused.append(InputRefused(str(path), "not a regular file (a pipe, device or socket)"))
    elif real.suffix.lower() not in SUPPORTED_SUFFIXES:
        refused.append(InputRefused(str(path), f"links to {real}: {_unsupported(real)}"))
    else:
        found.append(real)


def _walk(folder: Path, visited: set[tuple[int, int]],
          refused: list[InputRefused]) -> Iterator[Path]:
    real = os.path.realpath(folder)
    try:
        st = os.stat(real)
    except OSError as e:
        refused.append(_os_refusal(str(folder), e, _os_reason(e)))
        return
    if (st.st_dev, st.st_ino) in visited:  # a second link to a folder already read
        return
    visited.add((st.st_dev, st.st_ino))

    def unreadable(e: OSError) -> None:  # what the index holds under it is kept (rag.ingest)
        refused.append(_os_refusal(e.filename or str(folder), e, _os_reason(e)))

    for root, dirs, files in os.walk(folder, followlinks=False, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            p = Path(root) / d
            if p.is_symlink():  # os.walk does not descend into it; we do, once
                yield from _walk_link(p, visited, refused)
        for name in sorted(files):
            p = Path(root) / name
            if name.startswith(".") or p.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            try:
                st = p.stat()
            except OSError as e:
                refused.append(_os_refusal(str(p), e, _missing_reason(p, e)))
                continue
            if p.is_symlink() and _into_hidden(p):
                continue
            if stat.S_ISREG(st.st_mode) and p.suffix.lower() in JSONL_SUFFIXES \
                    and not _holds_documents(p):
                continue  # other JSON Lines (a Q&A file beside the documents): not ours
            kept: list[Path] = []
            _add_file(p, st, kept, refused)
            yield from kept


def _walk_link(link: Path, visited: set[tuple[int, int]],
               refused: list[InputRefused]) -> Iterator[Path]:
    try:
        target = os.path.realpath(link, strict=True)
    except OSError as e:
        refused.append(_os_refusal(str(link), e, _missing_reason(link, e)))
        return
    if _into_hidden(link):
        return  # a hidden folder is skipped, however it is reached
    here = os.path.realpath(link.parent)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        refused.append(InputRefused(str(link), f"symlink loop: leads back to {target}"))
        return
    yield from _walk(Path(target), visited, refused)


def _holds_documents(path: Path) -> bool:
    """Whether a JSON Lines file found in a folder is a document export: its first record
    has a "text" field (or cannot be read, and then each record is refused by name)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return True
            for line in iter(lambda: f.readline(READ_BLOCK), b""):
                if line.strip():
                    record = json.loads(line)
                    return not isinstance(record, dict) or "text" in record
    except (OSError, ValueError, RecursionError):
        return True
    return True


def _into_hidden(link: Path) -> bool:
    """Whether a symlink leads into a hidden folder (or to a hidden file) that the folder
    holding it is not itself inside: ~/.ssh reached through a link is skipped as ~/.ssh is."""
    target = os.path.realpath(link)
    here = os.path.realpath(link.parent)
    try:
        common = os.path.commonpath([target, here])
    except ValueError:
        common = os.sep
    rest = Path(os.path.relpath(target, common)).parts
    return any(part.startswith(".") and part not in (".", "..") for part in rest)


# errors that say the thing is gone for good; any other OSError may pass (permissions, I/O)
_GONE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


def _os_refusal(path: str, e: OSError, reason: str) -> InputRefused:
    return InputRefused(path, reason, transient=e.errno not in _GONE)


def _missing_reason(path: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT and path.is_symlink():
        return f"broken symlink (its target {os.readlink(path)} does not exist)"
    if e.errno == errno.ENOENT:
        return "no such file or folder"
    return _os_reason(e)


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "cannot be read: it no longer exists (deleted during the ingest?)"
    return f"cannot be read ({(e.strerror or str(e)).lower()})"


def _unsupported(path: Path) -> str:
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
        raise InputRefused(shown, _unsupported(path))
    limit = MAX_PACKED_BYTES if suffix in PDF_SUFFIXES | DOCX_SUFFIXES else MAX_TEXT_BYTES
    data = _read_bounded(path, limit)
    if not _NON_SPACE.search(data):
        raise InputRefused(shown, "empty file")
    pages: tuple[int, ...] = ()
    meta_title = ""
    try:
        if suffix in PDF_SUFFIXES:
            text, pages, meta_title = _pdf(data, shown)
        elif suffix in DOCX_SUFFIXES:
            text, meta_title = _docx(data, shown)
        elif suffix in HTML_SUFFIXES:
            text, meta_title = _html(data, shown)
        else:
            text = _decode(data, shown)
    except (InputRefused, MemoryError):  # MemoryError: the worker's budget (rag.sandbox)
        raise
    except Exception as e:  # third-party parsers raise anything on a damaged file
        raise InputRefused(shown, f"could not be read as {suffix[1:].upper()} "
                                  f"({_one_line(e)})") from e
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
        raise InputRefused(shown, _os_reason(e)) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InputRefused(shown, "not a regular file (a pipe, device or socket)")
        if before.st_size > limit:
            raise InputRefused(shown, f"file is {_size(before.st_size)}, over the "
                                      f"{_size(limit)} limit for one file: split it")
        parts, total = [], 0
        while True:
            block = os.read(fd, READ_BLOCK)
            if not block:
                break
            total += len(block)
            if total > limit:
                raise InputRefused(shown, f"grew past the {_size(limit)} limit while being read")
            parts.append(block)
        after = os.fstat(fd)
    except OSError as e:
        raise InputRefused(shown, _os_reason(e)) from None
    finally:
        os.close(fd)
    if after.st_nlink == 0:
        raise InputRefused(shown, "deleted while being read")
    if after.st_size != total or after.st_mtime_ns != before.st_mtime_ns:
        raise InputRefused(shown, "changed while being read: ingest it again")
    return b"".join(parts)


def _size(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{n} bytes"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]


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


# -- plain text ------------------------------------------------------------------------------

# UTF-32 first: its little-endian mark begins with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(data: bytes, shown: str) -> str:
    text = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                raise InputRefused(shown, f"marked as {encoding} but is not valid "
                                          f"{encoding}") from None
            break
    if text is None and b"\x00" in data[:8192]:
        text = _utf16_without_bom(data)
        if text is None:
            raise InputRefused(shown, "binary data, not text")
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _detect(data, shown)
    if _looks_binary(text):
        raise InputRefused(shown, "binary data, not text")
    return text


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 is the one common text encoding full of NUL bytes: ASCII letters come out as
    a letter and a NUL. Anything else with NULs is binary."""
    sample = data[:8192]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    encoding = "utf-16-le" if odd > 0.3 * len(sample) / 2 > even else \
        "utf-16-be" if even > 0.3 * len(sample) / 2 > odd else None
    if encoding is None or len(data) % 2:
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


# Legacy encodings worth trying on every non-UTF-8 file, most common first: on a tie the
# earlier wins (a few accented letters in French fit a dozen code pages equally well).
_LEGACY = ("cp1252", "cp1251", "koi8_r", "cp932", "gb18030", "cp949", "big5", "iso8859_2",
           "latin_1")
_SAMPLE_BYTES = 32 * 1024


def _detect(data: bytes, shown: str) -> str:
    """Choose among charset-normalizer's guesses and the common legacy encodings by how much
    mess (mojibake: odd mixtures of scripts, symbols inside words) each decoding shows, on a
    sample of the lines that hold non-ASCII bytes."""
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    lines = [line for line in data[:4 * _SAMPLE_BYTES * 8].split(b"\n")
             if any(b >= 0x80 for b in line)]
    sample = b"\n".join(lines)[:_SAMPLE_BYTES]
    guesses = [m.encoding for m in from_bytes(data[:4 * _SAMPLE_BYTES])][:5]
    scored = []
    for preference, name in enumerate(dict.fromkeys([*_LEGACY, *guesses])):
        try:
            text = codecs.getincrementaldecoder(name)().decode(sample, final=False)
        except (UnicodeDecodeError, LookupError):
            continue
        scored.append((round(mess_ratio(text, 1.0), 2), preference, name))
    if not scored:
        raise InputRefused(shown, "binary data, not text in any known encoding")
    _, _, encoding = min(scored)
    return data.decode(encoding, errors="replace")


def _looks_binary(text: str) -> bool:
    sample = text[:MiB]
    return bool(sample) and len(_CONTROL.findall(sample)) > 0.01 * len(sample)


# -- HTML ------------------------------------------------------------------------------------

_HTML_DROP = ("script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
              "nav", "header", "footer", "aside", "form", "button", "select", "head")
_HTML_BLOCKS = {"address", "article", "blockquote", "br", "dd", "details", "div", "dl", "dt",
                "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main",
                "ol", "p", "pre", "section", "summary", "table", "td", "th", "tr", "ul",
                "caption", "tbody", "thead", "tfoot"}


_HIDDEN_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden)",
                           re.IGNORECASE)


def _hidden(tag) -> bool:
    """An element the page hides from its reader: `hidden`, aria-hidden="true", or a style
    of display:none / visibility:hidden."""
    attrs = tag.attrs
    if not attrs:
        return False
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    style = attrs.get("style")
    return isinstance(style, str) and bool(_HIDDEN_STYLE.search(style))


def _html(data: bytes, shown: str) -> tuple[str, str]:
    """The main text of a page: <main> or <article> when there is one, else <body>, without
    scripts, navigation, headers and footers; one line per block element."""
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString
    from bs4.element import ProcessingInstruction, Tag

    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    for tag in soup.find_all(_hidden):  # what a reader of the page never sees
        if not tag.decomposed:
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    parts: list[str] = []
    skip = (Comment, Declaration, Doctype, ProcessingInstruction)
    for node in root.descendants:
        if isinstance(node, Tag):
            if node.name in _HTML_BLOCKS:
                parts.append("\n")
            elif isinstance(node.previous_sibling, Tag) and parts and \
                    not parts[-1][-1:].isspace():
                parts.append(" ")  # <a>Home</a><a>News</a>: two words, not "HomeNews"
        elif isinstance(node, NavigableString) and not isinstance(node, skip):
            if node.parent is not None and node.parent.name == "pre":
                parts.append(str(node))
            else:
                parts.append(re.sub(r"\s+", " ", str(node)))
    lines = (line.strip() for line in "".join(parts).split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise InputRefused(shown, "no text in the page's body")
    h1 = soup.find("h1")
    return text, title or (h1.get_text(" ", strip=True) if h1 else "")


# -- PDF -------------------------------------------------------------------------------------

def _pdf(data: bytes, shown: str) -> tuple[str, tuple[int, ...], str]:
    """Text page by page, pages separated by a blank line; offsets of each page's start."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    # pypdf logs every repair it makes on a damaged file; the refusal, if any, says enough
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # many PDFs are locked against editing only
            except DependencyError:
                opened = 0
            if not opened:
                raise InputRefused(shown, "encrypted PDF that needs a password: save an "
                                          "unlocked copy and ingest that")
        n_pages = len(reader.pages)
    except InputRefused:
        raise
    except Exception as e:  # pypdf raises many kinds of error on a damaged file
        raise InputRefused(shown, f"not a readable PDF ({_one_line(e)})") from e
    if n_pages == 0:
        raise InputRefused(shown, "PDF without pages")
    texts, starts, offset, failed = [], [], 0, 0
    for i in range(n_pages):
        try:
            page_text = reader.pages[i].extract_text() or ""
        except MemoryError:
            raise
        except Exception:  # one damaged page must not cost the others
            page_text, failed = "", failed + 1
        page_text = page_text.strip()
        starts.append(offset)
        texts.append(page_text)
        offset += len(page_text) + 2
        if offset > MAX_DOCUMENT_CHARS:
            break
    text = "\n\n".join(texts)
    if not text.strip():
        reason = "no page could be read" if failed == n_pages else \
            "no text layer (a scanned PDF?): run OCR on it first"
        raise InputRefused(shown, f"PDF with {reason}")
    title = ""
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception:  # damaged metadata: fall back to the first line
        title = ""
    return text, tuple(starts), title


# -- DOCX ------------------------------------------------------------------------------------

def _docx(data: bytes, shown: str) -> tuple[str, str]:
    """Paragraphs and table rows in document order. The zip's directory is checked before
    anything is unpacked, so a zip bomb is refused without being inflated."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise InputRefused(shown, "not a Word .docx file (not a zip archive; an old .doc "
                                  "must be saved as .docx first)")
    try:
        with zipfile.ZipFile(buffer) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputRefused(shown, f"damaged .docx ({_one_line(e)})") from e
    names = {i.filename for i in infos}
    if "word/document.xml" not in names:
        raise InputRefused(shown, "not a Word document (no word/document.xml inside)")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_UNPACKED_BYTES:
        raise InputRefused(shown, f"would unpack to {_size(unpacked)}, over the "
                                  f"{_size(MAX_UNPACKED_BYTES)} limit (a zip bomb?)")
    for i in infos:
        if i.filename.endswith((".xml", ".rels")) and i.file_size > MAX_XML_INFLATE_FROM and \
                i.file_size > MAX_XML_INFLATION * max(1, i.compress_size):
            ratio = i.file_size // max(1, i.compress_size)
            raise InputRefused(shown, f"{i.filename} would inflate {ratio:,}-fold to "
                                      f"{_size(i.file_size)} (over {MAX_XML_INFLATION}-fold; "
                                      "a zip bomb?)")
        if i.filename.endswith((".xml", ".rels")) and i.file_size > MAX_XML_PART_BYTES:
            raise InputRefused(shown, f"{i.filename} would unpack to {_size(i.file_size)}, "
                                      f"over the {_size(MAX_XML_PART_BYTES)} limit "
                                      "(a zip bomb?)")
    import docx
    from docx.table import Table

    # python-docx parses with resolve_entities=False: no entity expansion bombs.
    buffer.seek(0)
    document = docx.Document(buffer)
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = dict.fromkeys(c.text.strip() for c in row.cells)  # merged cells repeat
                lines.append(" | ".join(c for c in cells if c))
        else:
            lines.append(block.text.strip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text, document.core_properties.title or ""


# -- JSON Lines ------------------------------------------------------------------------------

def _jsonl(path: Path) -> Iterator[Document | InputRefused]:
    """One Document per record {"text": ..., "id"?, "title"?, "url"?, "metadata"?}; a record
    without an id is named by its line number. Streamed: the file may be of any size."""
    shown = str(path)
    try:
        fh = open(path, "rb", buffering=READ_BLOCK)
    except OSError as e:
        raise InputRefused(shown, _os_reason(e)) from None
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InputRefused(shown, "not a regular file (a pipe, device or socket)")
        seen: dict[str, int] = {}
        n_records = n_refused = lineno = 0
        while True:
            try:
                line = fh.readline(MAX_RECORD_BYTES + 1)
            except OSError as e:
                raise InputRefused(shown, _os_reason(e)) from None
            if not line:
                break
            lineno += 1
            where = f"{shown}:{lineno}"
            if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest of this line
                    line = fh.readline(READ_BLOCK)
                n_refused += 1
                yield InputRefused(where, f"record longer than {_size(MAX_RECORD_BYTES)}")
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
        return f"not valid JSON ({_one_line(e)})"
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
