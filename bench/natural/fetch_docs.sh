#!/usr/bin/env bash
# Build the document folder for the natural-question development set.
#
# Source: the Debian package `debian-history` ("A Brief History of Debian",
# GPL-2+), shipped under /usr/share/doc/debian-history/.  The English HTML
# chapters are converted to plain text (stdlib html.parser only), Chapter 4 is
# split into one file per section, and the plain-text companion documents
# (social contract, constitution, release dedications) are copied as they are.
#
# Output: bench/work/natural/docs/*.txt (bench/work/ is git-ignored).
# Idempotent: installs the package only when missing and rewrites the folder.
# No network other than apt-get.
set -euo pipefail

PKG=debian-history
SRC=/usr/share/doc/debian-history
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/bench/work/natural/docs"

if ! dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y "$PKG"; then
        $SUDO apt-get update
        $SUDO apt-get install -y "$PKG"
    fi
fi

mkdir -p "$OUT"
rm -f "$OUT"/*.txt

python3 - "$SRC" "$OUT" <<'PY'
import gzip, os, re, sys
from html.parser import HTMLParser

src, out = sys.argv[1], sys.argv[2]
docs = os.path.join(src, "docs")

BLOCK = {"p", "div", "br", "hr", "li", "dt", "dd", "tr", "blockquote",
         "ul", "ol", "dl", "table", "pre", "h1", "h2", "h3", "h4"}
SKIP_CLASSES = {"navheader", "navfooter", "toc", "footnotes"}


class Conv(HTMLParser):
    """HTML -> list of (level, title, text) sections, split at h1/h2/h3."""

    def __init__(self, footnotes):
        super().__init__(convert_charrefs=True)
        self.footnotes = footnotes
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
        if self.skip or (classes & SKIP_CLASSES):
            if not void:
                self.stack.append((tag, True))
                self.skip += 1
            return
        if not void:
            self.stack.append((tag, False))
        if tag == "a" and "footnote" in classes:
            note = self.footnotes.get((a.get("href") or "").lstrip("#"))
            if note:
                self.emit(" (Footnote: %s)" % note)
            # swallow the [1] marker
            self.stack[-1] = (tag, True)
            self.skip += 1
            return
        if tag in ("h1", "h2", "h3", "h4"):
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
                for t, sk in self.stack[i:]:
                    if sk:
                        self.skip -= 1
                del self.stack[i:]
                break
        else:
            return
        if self.skip:
            return
        if tag in ("h1", "h2", "h3", "h4") and self.heading:
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
    notes = {}
    for m in re.finditer(r'<div id="ftn\.([^"]+)" class="footnote">(.*?)</div>', html, re.S):
        body = re.sub(r'<sup class="para">.*?</sup>', "", m.group(2), flags=re.S)
        body = re.sub(r"<[^>]+>", " ", body)
        notes[m.group(1)] = re.sub(r"\s+", " ", body).strip()
    # the marker links to "#ftn.ID"
    return {"ftn." + k: v for k, v in notes.items()}


def tidy(text):
    lines = [l.strip() for l in text.split("\n")]
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


def convert(name):
    html = open(os.path.join(docs, name), encoding="utf-8").read()
    c = Conv(footnotes_of(html))
    c.feed(html)
    c.close()
    return [(lvl, title, tidy("".join(parts))) for lvl, title, parts in c.sections]


def render(secs):
    chunks = []
    for lvl, title, body in secs:
        if title:
            chunks.append(title)
        if body:
            chunks.append(body)
    return "\n\n".join(chunks).strip() + "\n"


def write(stem, text):
    with open(os.path.join(out, stem + ".txt"), "w", encoding="utf-8") as f:
        f.write(text)


BOOK = "A Brief History of Debian"

# Chapters 1-3 and the manifesto appendix: one file each.
for stem, name in [("ch1-introduction", "intro.en.html"),
                   ("ch2-leadership", "leaders.en.html"),
                   ("ch3-releases", "releases.en.html"),
                   ("appendix-manifesto", "manifesto.en.html")]:
    secs = [s for s in convert(name) if s[1] or s[2]]
    write(stem, BOOK + "\n\n" + render(secs))

# Chapter 4: one file per 4.N section (subsections stay with their parent).
secs = [s for s in convert("detailed.en.html") if s[1] or s[2]]
chapter_title = secs[0][1]
groups = []
for lvl, title, body in secs[1:]:
    if lvl == 2:
        groups.append([(lvl, title, body)])
    elif groups:
        groups[-1].append((lvl, title, body))
for g in groups:
    m = re.match(r"4\.(\d+)\.\s+(.*)", g[0][1])
    num, name = int(m.group(1)), m.group(2)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "").replace(".", "")).strip("-")
    slug = slug.replace("the-", "", 1) if slug.startswith("the-") else slug
    write("ch4-%02d-%s" % (num, slug),
          BOOK + " - " + chapter_title + "\n\n" + render(g))

# Plain-text companions shipped by the same package.
def gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read()

write("social-contract", gz(os.path.join(src, "social-contract.txt.gz")))
write("constitution", gz(os.path.join(src, "constitution.txt.gz")))
for v in ("2.2", "5.0", "9.0"):
    with open(os.path.join(src, "dedication", "dedication-%s.txt" % v), encoding="utf-8") as f:
        write("dedication-" + v.replace(".", "-"), f.read())
PY

n=$(ls "$OUT"/*.txt | wc -l)
bytes=$(cat "$OUT"/*.txt | wc -c)
echo "wrote $n documents ($bytes bytes) to $OUT"
