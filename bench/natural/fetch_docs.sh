#!/usr/bin/env bash
# Build the document folder for the natural-question development set.
#
# Source: the Debian package `debian-history` ("A Brief History of Debian",
# GPL-2+), shipped under /usr/share/doc/debian-history/.  The English HTML
# chapters are converted to plain text by bench/natural/html_text.py (stdlib
# html.parser only), Chapter 4 is split into one file per section, and the
# plain-text companion documents (social contract, constitution, release
# dedications) are copied as they are.
#
# Output: bench/work/natural/docs/*.txt (bench/work/ is git-ignored).
# Idempotent: installs the package only when missing and rewrites the folder.
# No network other than apt-get.
set -euo pipefail

PKG=debian-history
SRC=/usr/share/doc/debian-history
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/bench/work/natural/docs"

bash "$ROOT/bench/natural/ensure_package.sh" "$PKG"

mkdir -p "$OUT"
rm -f "$OUT"/*.txt

python3 - "$SRC" "$OUT" "$ROOT/bench/natural" <<'PY'
import gzip, os, re, sys

src, out, here = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, here)
from html_text import convert as convert_file, render

docs = os.path.join(src, "docs")


def convert(name):
    return convert_file(os.path.join(docs, name))


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
