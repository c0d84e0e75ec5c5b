#!/usr/bin/env python3
"""Convert an HTML page to plain text with the standard library's html.parser.

Used by bench/natural/fetch_docs.sh (DocBook HTML of "A Brief History of
Debian"), bench/calibration/fetch_docs.sh (Sphinx HTML of the Python
documentation) and bench/calibration_kernel/fetch_docs.sh (Sphinx HTML in the
Read the Docs theme: the Linux kernel's documentation). The defaults fit the
DocBook pages; SPHINX holds the options for Sphinx pages.

As a module: ``convert(path, **options)`` returns (level, title, text)
sections split at headings, and ``render(sections)`` joins them into text.
As a command: ``python3 html_text.py [--sphinx] [--rtd] PAGE.html [OUT.txt]``
writes the whole page as text (to stdout when OUT.txt is not given);
``python3 html_text.py [--sphinx] [--rtd] --pages SRC OUT`` reads "stem page"
lines on stdin and writes each page under SRC as OUT/stem.txt (what the
question sets' fetch_docs.sh run). ``--rtd`` keeps only the article of a Read
the Docs themed page: the lines between its breadcrumb's "View page source"
and its footer's "Previous Next".
Stdlib only.
"""

from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser

BLOCK = {"p", "div", "br", "hr", "li", "dt", "dd", "tr", "blockquote",
         "ul", "ol", "dl", "table", "pre", "h1", "h2", "h3", "h4"}
# DocBook navigation, tables of contents and the footnote block (footnotes are
# inlined where they are referenced).
SKIP_CLASSES = frozenset({"navheader", "navfooter", "toc", "footnotes"})
HEADINGS = ("h1", "h2", "h3", "h4")

# Sphinx: the mobile menu, the "related" navigation bars, the sidebar, the
# footer, the local table of contents and the "¶" permalinks in headings.
SPHINX = {
    "skip_classes": frozenset({"mobile-nav", "related", "sphinxsidebar", "footer",
                               "contents", "headerlink"}),
    "headings": ("h1", "h2", "h3", "h4", "h5", "h6"),
    "skip_tags": frozenset({"script", "style"}),
}


class Conv(HTMLParser):
    """HTML -> list of (level, title, text) sections, split at the headings.

    skip_classes: elements with any of these classes are dropped with their
    content. headings: the tags that start a new section. skip_tags: tags
    dropped with their content.
    """

    def __init__(self, footnotes, skip_classes=SKIP_CLASSES, headings=HEADINGS,
                 skip_tags=()):
        super().__init__(convert_charrefs=True)
        self.footnotes = footnotes
        self.skip_classes = set(skip_classes)
        self.headings = tuple(headings)
        self.skip_tags = set(skip_tags)
        self.sections = [[0, "", []]]
        self.skip = 0          # depth inside a skipped element
        self.stack = []        # open tags: (tag, skipping)
        self.heading = None    # (level, [chars]) while inside hN
        self.pre = 0
        self.in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag == "head":
            self.in_head = True
        void = tag in ("br", "hr", "img", "meta", "link")
        if self.skip or (classes & self.skip_classes) or tag in self.skip_tags:
            if not void:
                self.stack.append((tag, True))
                self.skip += 1
            return
        if not void:
            self.stack.append((tag, False))
        if tag == "a" and "footnote" in classes:
            note = self.footnotes.get((a.get("href") or "").lstrip("#"))
            if note:
                self.emit(f" (Footnote: {note})")
            # swallow the [1] marker
            self.stack[-1] = (tag, True)
            self.skip += 1
            return
        if tag in self.headings:
            self.heading = (int(tag[1]), [])
            return
        if tag == "pre":
            self.pre += 1
        if tag == "li":
            self.emit("\n- ")
        elif tag in BLOCK:
            self.emit("\n\n" if tag in ("p", "pre", "blockquote") else "\n")

    def handle_endtag(self, tag):
        if tag == "head":
            self.in_head = False
        # pop to the matching tag
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _t, sk in self.stack[i:]:
                    if sk:
                        self.skip -= 1
                del self.stack[i:]
                break
        else:
            return
        if self.skip:
            return
        if tag in self.headings and self.heading:
            lvl, chars = self.heading
            title = re.sub(r"\s+", " ", "".join(chars)).strip()
            self.heading = None
            self.sections.append([lvl, title, []])
            return
        if tag == "pre":
            self.pre -= 1
        if tag in BLOCK:
            self.emit("\n")

    def handle_data(self, data):
        if self.skip or self.in_head:
            return
        if self.heading:
            self.heading[1].append(data)
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
        self.emit(data)

    def emit(self, s):
        self.sections[-1][2].append(s)


def footnotes_of(html):
    """DocBook footnotes: {"ftn.ID": text}; empty for other HTML."""
    notes = {}
    for m in re.finditer(r'<div id="ftn\.([^"]+)" class="footnote">(.*?)</div>', html, re.S):
        body = re.sub(r'<sup class="para">.*?</sup>', "", m.group(2), flags=re.S)
        body = re.sub(r"<[^>]+>", " ", body)
        notes[m.group(1)] = re.sub(r"\s+", " ", body).strip()
    # the marker links to "#ftn.ID"
    return {"ftn." + k: v for k, v in notes.items()}


def tidy(text):
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"(?m)^-\n+(?=\S)", "- ", text)          # "-" + "<p>item" -> "- item"
    while True:                                              # no blank line inside a list
        t2 = re.sub(r"(?m)^(- .*)\n\n(?=- )", r"\1\n", text)
        if t2 == text:
            break
        text = t2
    text = re.sub(r" +([.,;:])", r"\1", text)
    return text.strip()


def convert(path, **options):
    """Read the HTML file at path and return its (level, title, text) sections.

    options are passed to Conv (skip_classes, headings, skip_tags).
    """
    with open(path, encoding="utf-8") as f:
        html = f.read()
    c = Conv(footnotes_of(html), **options)
    c.feed(html)
    c.close()
    return [(lvl, title, tidy("".join(parts))) for lvl, title, parts in c.sections]


def render(secs):
    chunks = []
    for _lvl, title, body in secs:
        if title:
            chunks.append(title)
        if body:
            chunks.append(body)
    return "\n\n".join(chunks).strip() + "\n"


def article(text):
    """A Read the Docs page's article: the lines after its breadcrumb's "View
    page source" and before its footer's "Previous Next", leading blank lines
    dropped."""
    lines = text.split("\n")
    start = lines.index("-   View page source") + 1 if "-   View page source" in lines \
        else len(lines)
    end = lines.index("Previous Next", start) if "Previous Next" in lines[start:] \
        else len(lines)
    body = lines[start:end]
    while body and not body[0].strip():
        body.pop(0)
    return "".join(line + "\n" for line in body)


def page_text(path, options, rtd):
    text = render(convert(path, **options))
    return article(text) if rtd else text


def pages(src, out, options, rtd, listing):
    """Each "stem page" line of listing: src/page as out/stem.txt (a page
    missing from src is skipped with a note; an empty article is an error)."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".txt"):
            os.remove(os.path.join(out, name))
    n = size = 0
    for line in listing.splitlines():
        if not line.strip():
            continue
        stem, page = line.split()
        path = os.path.join(src, page)
        if not os.path.isfile(path):
            print(f"skip {page}: not in {src}", file=sys.stderr)
            continue
        text = page_text(path, options, rtd)
        if not text.strip():
            print(f"empty article body in {page}", file=sys.stderr)
            return 1
        with open(os.path.join(out, stem + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
        n += 1
        size += len(text.encode("utf-8"))
    print(f"wrote {n} documents ({size} bytes) to {out}")
    return 0


def main(argv):
    args = argv[1:]
    options, rtd = {}, False
    while args and args[0] in ("--sphinx", "--rtd"):
        if args[0] == "--sphinx":
            options = SPHINX
        else:
            rtd = True
        args = args[1:]
    if args and args[0] == "--pages" and len(args) == 3:
        return pages(args[1], args[2], options, rtd, sys.stdin.read())
    if len(args) not in (1, 2) or args[0] == "--pages":
        print("usage: html_text.py [--sphinx] [--rtd] PAGE.html [OUT.txt]\n"
              "       html_text.py [--sphinx] [--rtd] --pages SRC OUT < stem-page lines",
              file=sys.stderr)
        return 2
    text = page_text(args[0], options, rtd)
    if len(args) == 2:
        with open(args[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
