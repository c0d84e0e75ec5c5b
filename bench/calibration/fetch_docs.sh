#!/usr/bin/env bash
# Build the document folder for the calibration question set.
#
# Source: the Debian package `python3.11-doc` (the Python 3.11 documentation,
# PSF License), shipped as Sphinx HTML under /usr/share/doc/python3.11/html/.
# Thirteen pages (the FAQs, "History and License", three "What's New" pages and
# two HOWTOs) are converted to plain text, one file per page, by
# bench/natural/html_text.py (stdlib html.parser only) with its Sphinx options.
#
# Output: bench/work/calibration/docs/*.txt (bench/work/ is git-ignored).
# Idempotent: installs the package only when missing and rewrites the folder.
# No network other than apt-get.
set -euo pipefail

PKG=python3.11-doc
SRC=/usr/share/doc/python3.11/html
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/bench/work/calibration/docs"

bash "$ROOT/bench/natural/ensure_package.sh" "$PKG"

# stem  page (relative to $SRC)
PAGES="
faq-general        faq/general.html
faq-design         faq/design.html
faq-programming    faq/programming.html
faq-library        faq/library.html
faq-extending      faq/extending.html
faq-installed      faq/installed.html
faq-gui            faq/gui.html
license            license.html
whatsnew-3-11      whatsnew/3.11.html
whatsnew-3-10      whatsnew/3.10.html
whatsnew-3-0       whatsnew/3.0.html
howto-unicode      howto/unicode.html
howto-logging      howto/logging.html
"

echo "$PAGES" | python3 "$ROOT/bench/natural/html_text.py" --sphinx --pages "$SRC" "$OUT"
