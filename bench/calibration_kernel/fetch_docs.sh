#!/usr/bin/env bash
# Build the document folder for the kernel-process calibration question set
# (narrative prose: people, decisions, dates, reasons).
#
# Source: the Debian package `linux-doc` (a meta-package that pulls in
# linux-doc-6.1, the Linux kernel's own documentation, GPL-2), shipped as
# Sphinx HTML under /usr/share/doc/linux-doc-6.1/html/. Eighteen prose pages
# (the kernel development process guide, the HOWTO, the stable-kernel,
# regression, security and hardware-embargo policies, the code of conduct
# interpretation, the enforcement statement and a few essays) are converted to
# plain text, one file per page, by bench/natural/html_text.py (stdlib
# html.parser only) with its Sphinx options. The Read the Docs theme's side
# navigation, breadcrumbs and footer are not Sphinx-classic classes, so the
# text is cut to the article body (--rtd): the lines after the breadcrumb's
# "View page source" and before the footer's "Previous Next".
#
# Output: bench/work/calibration_kernel/docs/*.txt (bench/work/ is git-ignored).
# Idempotent: installs the package only when missing and rewrites the folder.
# No network other than apt-get.
set -euo pipefail

PKG=linux-doc
SRC=/usr/share/doc/linux-doc-6.1/html
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/bench/work/calibration_kernel/docs"

bash "$ROOT/bench/natural/ensure_package.sh" "$PKG"

# stem  page (relative to $SRC)
PAGES="
dev-intro                       process/1.Intro.html
dev-process                     process/2.Process.html
dev-early-stage                 process/3.Early-stage.html
dev-followthrough               process/6.Followthrough.html
dev-advanced-topics             process/7.AdvancedTopics.html
dev-conclusion                  process/8.Conclusion.html
howto                           process/howto.html
management-style                process/management-style.html
stable-api-nonsense             process/stable-api-nonsense.html
stable-kernel-rules             process/stable-kernel-rules.html
embargoed-hardware-issues       process/embargoed-hardware-issues.html
code-of-conduct-interpretation  process/code-of-conduct-interpretation.html
kernel-enforcement-statement    process/kernel-enforcement-statement.html
handling-regressions            process/handling-regressions.html
researcher-guidelines           process/researcher-guidelines.html
volatile-considered-harmful     process/volatile-considered-harmful.html
security-bugs                   admin-guide/security-bugs.html
tainted-kernels                 admin-guide/tainted-kernels.html
"

echo "$PAGES" | python3 "$ROOT/bench/natural/html_text.py" --sphinx --rtd --pages "$SRC" "$OUT"
