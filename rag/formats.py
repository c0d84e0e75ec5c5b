"""One file's bytes -> its text, by format: plain text and Markdown in any common encoding,
HTML (the main text), PDF (text per page, with the offset of each page's start) and Word
.docx. Every input is untrusted: what cannot be read raises an InputRefused with a one-line
reason; a .docx is checked for zip bombs before anything is unpacked. rag.loaders reads the
file and calls these."""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile

from rag.errors import InputRefused

MB = 10**6  # sizes are told to people in MB, as file managers show them
MiB = 2**20
MAX_UNPACKED_BYTES = 256 * MB  # .docx: all parts, as declared by the zip, before unpacking
MAX_XML_PART_BYTES = 64 * MB  # .docx: one XML part, parsed into a tree
# .docx: an XML part over MAX_XML_INFLATE_FROM may inflate at most this many times its packed
# size (Word's own: 5-15x; 95 KB holding 20 MB of XML took 764 MB to parse)
MAX_XML_INFLATION = 100
MAX_XML_INFLATE_FROM = 4 * MB
MAX_DOCUMENT_CHARS = 32 * MB  # extracted text of any one document, in characters

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def size(n: int) -> str:
    """A size as told to people."""
    return f"{n / MB:.0f} MB" if n >= MB else f"{n} bytes"


def one_line(e: BaseException) -> str:
    """An error's message on one line, at most 160 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]


# -- plain text ------------------------------------------------------------------------------

# UTF-32 first: its little-endian mark begins with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, shown: str) -> str:
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


def read_html(data: bytes, shown: str) -> tuple[str, str]:
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

def read_pdf(data: bytes, shown: str) -> tuple[str, tuple[int, ...], str]:
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
        raise InputRefused(shown, f"not a readable PDF ({one_line(e)})") from e
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

def read_docx(data: bytes, shown: str) -> tuple[str, str]:
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
        raise InputRefused(shown, f"damaged .docx ({one_line(e)})") from e
    names = {i.filename for i in infos}
    if "word/document.xml" not in names:
        raise InputRefused(shown, "not a Word document (no word/document.xml inside)")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_UNPACKED_BYTES:
        raise InputRefused(shown, f"would unpack to {size(unpacked)}, over the "
                                  f"{size(MAX_UNPACKED_BYTES)} limit (a zip bomb?)")
    for i in infos:
        if i.filename.endswith((".xml", ".rels")) and i.file_size > MAX_XML_INFLATE_FROM and \
                i.file_size > MAX_XML_INFLATION * max(1, i.compress_size):
            ratio = i.file_size // max(1, i.compress_size)
            raise InputRefused(shown, f"{i.filename} would inflate {ratio:,}-fold to "
                                      f"{size(i.file_size)} (over {MAX_XML_INFLATION}-fold; "
                                      "a zip bomb?)")
        if i.filename.endswith((".xml", ".rels")) and i.file_size > MAX_XML_PART_BYTES:
            raise InputRefused(shown, f"{i.filename} would unpack to {size(i.file_size)}, "
                                      f"over the {size(MAX_XML_PART_BYTES)} limit "
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
