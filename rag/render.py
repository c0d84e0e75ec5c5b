"""How results look: an answer and its passages as the terminal shows them, a briefing in
Markdown and as an HTML page, and an eval report as a table, JUnit XML and an HTML page with an
SVG chart. The jobs (rag.answer, rag.brief, rag.evaluate) make the results; this module only
renders them. Every text from a document is made safe for a terminal (rag.display.printable)
or escaped for HTML; the pages are self-contained (no script, font or link outside them)."""

from __future__ import annotations

import html
import re
from pathlib import Path

from rag.citations import strip_markers
from rag.display import printable
from rag.evaluate import (
    ANSWER_METRICS,
    LOWER_IS_BETTER,
    QAItem,
    item_passed,
    number,
    source_matches,
)
from rag.types import Answer, Briefing, Citation, Point


def place(source: str, chunk_id: str | None = None) -> str:
    """Where a passage stands, for a terminal: its source's name on one line, with its chunk id
    in brackets when given."""
    text = printable(source, one_line=True)
    return text if chunk_id is None else f"{text} ({chunk_id})"


def citation(n: int, source: str, chunk_id: str | None = None, quote: str | None = None) -> str:
    """One cited source for a terminal: `[n]` and its place, with `quote` after a colon in
    quotation marks."""
    text = f"[{n}] {place(source, chunk_id)}"
    if quote is not None:
        text += f": “{printable(quote)}”"
    return text


# -- answers -----------------------------------------------------------------------------------

# An abstention names the passages it searched, where a person can read on: one of the five holds
# the answer far more often than the reader answers with confidence (bench/ceiling.py).
SEARCHED_SHOWN = 3


def answer_text(a: Answer) -> str:
    """An answer and its sources, as `rag ask` prints them; an abstention, and the passages it
    searched."""
    lines = [printable(a.answer)]
    if a.citations:
        lines += ["", "Sources:"]
        for c in a.citations:
            lines.append(f"  {citation(c.n, c.source, c.chunk_id)}\n"
                         f"      \"{printable(c.text)}\"")
    elif a.abstained and a.hits:
        lines += ["", "Searched, none judged to answer it:"]
        lines += [f"  {place(h.chunk.source, h.chunk.chunk_id)}"
                  for h in sorted(a.hits, key=lambda h: h.rank)[:SEARCHED_SHOWN]]
    return "\n".join(lines)


def passages_text(a: Answer) -> str:
    """The passages behind an answer, in full: those cited first, then the rest retrieved."""
    cited = {c.chunk_id: c.n for c in a.citations}
    hits = sorted(a.hits, key=lambda h: (h.chunk.chunk_id not in cited, h.rank))
    blocks = []
    for h in hits:
        mark = f"[{cited[h.chunk.chunk_id]}]" if h.chunk.chunk_id in cited else "retrieved"
        head = (f"{mark} {printable(h.chunk.source, one_line=True)} ({h.chunk.chunk_id}, "
                f"score {h.score:.4f})")
        if h.also_in:
            head += f"; also in {', '.join(printable(s, one_line=True) for s in h.also_in)}"
        blocks.append(f"{head}\n{printable(h.chunk.text)}")
    return "\n\n".join(blocks) if blocks else "(no passages were retrieved)"


# -- briefings ---------------------------------------------------------------------------------


def briefing_markdown(b: Briefing) -> str:
    """The briefing for a person to read; the documents' words made safe for a terminal
    (rag.display.printable), names on one line each."""
    def name(source: str) -> str:
        return printable(source, one_line=True)

    topic = printable(b.topic, one_line=True) if b.topic else ""
    lines = [f"# Briefing{': ' + topic if topic else ''}", ""]
    lines.append(f"{len(b.points)} points from {len(b.sources)} documents.")
    lines.append("")
    lines.append("## Key points")
    for p in b.points:
        lines.append(f"- {printable(p.text)} "
                     f"({p.n_sources} source{'s' if p.n_sources != 1 else ''})")
        claim = strip_markers(p.text)
        for c in p.citations:
            lines.append("    " + citation(c.n, c.source,
                                             quote=None if c.text == claim else c.text))
    if b.conflicts:
        lines += ["", "## Where the sources disagree"]
        for p in b.conflicts:
            lines.append(f"- {printable(p.text)}")
            for c in p.citations:
                lines.append("    " + citation(c.n, c.source, quote=c.text))
    lines += ["", "## Sources"]
    for s, t in b.sources:
        lines.append(f"- {name(s)}: {printable(t, one_line=True)}")
    return "\n".join(lines) + "\n"


def briefing_html(b: Briefing) -> str:
    """One self-contained page: no scripts, fonts or links outside it. Every [n] opens its
    source and passage on hover or focus, and the passages are also listed under each item."""
    numbers = {s: k + 1 for k, (s, _) in enumerate(b.sources)}

    def cite(c: Citation, anchor: str) -> str:
        name = html.escape(Path(c.source).name)
        return (f'<a class="cite" href="#{anchor}-{c.n}" aria-describedby="{anchor}-{c.n}">'
                f'[{c.n}]<span class="pop" role="tooltip"><span class="src">{name}</span>'
                f'<q>{html.escape(c.text)}</q></span></a>')

    def item(p: Point, anchor: str, extra: str = "") -> str:
        by_n = {c.n: c for c in p.citations}
        body = re.sub(r"\[(\d+)\]", lambda m: cite(by_n[int(m.group(1))], anchor)
                      if int(m.group(1)) in by_n else m.group(), html.escape(p.text))
        body = re.sub(r"((?:<a class=\"cite\".*?</a>)+)", r'<span class="cites">\1</span>', body)
        claim = strip_markers(p.text)
        quotes = "".join(
            f'<li id="{anchor}-{c.n}"><span class="n">[{c.n}]</span> '
            f'<a class="src" href="#s{numbers.get(c.source, 0)}" '
            f'title="{html.escape(c.source)}">{html.escape(Path(c.source).name)}</a>'
            + (' <span class="same">the passage quoted above</span>' if c.text == claim else "")
            + f'<blockquote{" hidden" if c.text == claim else ""}>{html.escape(c.text)}'
            '</blockquote></li>' for c in p.citations)
        return (f'<li class="item" id="{anchor}"><p class="claim">{body}{extra}</p>'
                f'<ol class="quotes">{quotes}</ol></li>')

    def badge(p: Point) -> str:
        return f' <span class="badge">{p.n_sources} source{"s" if p.n_sources != 1 else ""}</span>'

    points = "".join(item(p, f"p{k + 1}", badge(p)) for k, p in enumerate(b.points))
    conflicts = "".join(
        item(p, f"c{k + 1}", f' <span class="badge warn">{html.escape(getattr(p, "aspect", ""))}'
             '</span>') for k, p in enumerate(b.conflicts))
    if not conflicts:
        conflicts = '<li class="none">No disagreement found between the sources.</li>'
    sources = "".join(f'<li id="s{numbers[s]}"><code>{html.escape(s)}</code>'
                      f'<span class="title">{html.escape(t)}</span></li>' for s, t in b.sources)
    title = "Briefing" + (f": {html.escape(b.topic)}" if b.topic else "")
    meta = (f"{len(b.points)} points from {len(b.sources)} documents · "
            f"{len(b.conflicts)} disagreement{'s' if len(b.conflicts) != 1 else ''} · "
            "every point is quoted verbatim from its sources")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:52rem;
margin:2rem auto;padding:0 1rem;color:#1f2328;background:#fff}}
h1{{margin:0 0 .2rem;font-size:1.7rem}} h2{{margin:2rem 0 .6rem;font-size:1.2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}}
.meta{{color:#59636e;margin:0}}
ol.items{{padding-left:1.4rem}} li.item{{margin:0 0 1rem}} .claim{{margin:0 0 .2rem}}
.badge{{display:inline-block;font-size:.75rem;padding:0 .45rem;border-radius:1rem;
background:#ddf4ff;color:#0969da;margin-left:.3rem;white-space:nowrap}}
.badge.warn{{background:#fff1e5;color:#bc4c00}}
.cite{{position:relative;color:#0969da;text-decoration:none;font-size:.8em;
vertical-align:super;margin-left:.1em}}
.cite:hover,.cite:focus{{text-decoration:underline}} .cites{{white-space:nowrap}}
.same{{font-style:italic}}
.pop{{display:none;position:absolute;left:0;top:1.3em;z-index:10;width:26rem;
max-width:80vw;padding:.5rem .7rem;background:#fff;border:1px solid #d0d7de;border-radius:6px;
box-shadow:0 4px 12px rgba(0,0,0,.15);color:#1f2328;font-size:.85rem;line-height:1.4;
vertical-align:baseline;white-space:normal}}
.cite:hover .pop,.cite:focus .pop{{display:block}}
.pop .src{{display:block;font:600 .75rem ui-monospace,monospace;color:#59636e}}
ol.quotes{{list-style:none;margin:.1rem 0 0;padding-left:.4rem;font-size:.85rem;color:#59636e}}
ol.quotes li{{margin:.15rem 0}} ol.quotes li:target{{background:#fff8c5}}
.n{{font-weight:600;color:#0969da}} a.src{{font-family:ui-monospace,monospace;color:#59636e}}
blockquote{{margin:.1rem 0 .3rem 1.6rem;padding-left:.6rem;border-left:3px solid #d0d7de;
color:#424a53}}
#sources li{{margin:.2rem 0}} #sources code{{font-size:.8rem}}
#sources .title{{display:block;color:#59636e;font-size:.85rem}}
.none{{color:#59636e;list-style:none}}
</style></head><body>
<header><h1>{title}</h1><p class="meta">{meta}</p></header>
<section><h2>Key points</h2><ol class="items" id="points">{points}</ol></section>
<section><h2>Where the sources disagree</h2><ol class="items" id="conflicts">{conflicts}</ol>
</section>
<section><h2>Sources</h2><ol id="sources">{sources}</ol></section>
</body></html>
"""


# -- eval reports ------------------------------------------------------------------------------


def eval_junit(items: list[QAItem], report: dict) -> str:
    from xml.sax.saxutils import escape, quoteattr

    cases, failures = [], 0
    for item, result in zip(items, report["items"]):
        ok, why = item_passed(item, result)
        body = "" if ok else f'<failure message={quoteattr(why)}>{escape(why)}</failure>'
        failures += not ok
        cases.append(f'  <testcase classname="rag.eval" name={quoteattr(item.id)} '
                     f'time="{result["latency_s"]}">{body}</testcase>')
    total = sum(r["latency_s"] for r in report["items"])
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuite name="rag eval" tests="{len(items)}" failures="{failures}" '
            f'errors="0" time="{total:.3f}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def eval_table(report: dict, baseline: dict | None = None) -> str:
    base = (baseline or {}).get("metrics", {})
    gates = report.get("gates", {})
    limits = gates.get("thresholds", {})
    head = f"{'baseline':>12} " if baseline else ""
    lines = [f"{'metric':<24} {'value':>12} {head} threshold"]
    strings = []
    for name, value in report["metrics"].items():
        if isinstance(value, str):
            strings.append(f"{name}: {value}")
            continue
        old = f"{base.get(name, '')!s:>12} " if baseline else ""
        lines.append(f"{name:<24} {value!s:>12} {old} {limits.get(name, '')}".rstrip())
    if strings:
        lines += ["", "  ".join(strings)]
    failed = [r for r in report["items"] if not r.get("passed", True)]
    if failed:
        lines += ["", f"{len(failed)} of {len(report['items'])} questions failed:"]
        lines += [_clip(f"  {r['id']}: {r['failure']}", 150) for r in failed]
    lines.append("")
    lines.append("gates: " + ("passed" if gates.get("passed", True) else
                              "FAILED: " + "; ".join(gates.get("failures", []))))
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# Metrics drawn as bars on a 0..1 scale in the HTML report.
def _is_rate(name: str) -> bool:
    return name.startswith(("recall@", "mrr@")) or name in ANSWER_METRICS - {"answer_words_mean"}


def eval_html(items: list[QAItem], report: dict, baseline: dict | None = None,
                title: str = "rag eval") -> str:
    """One self-contained page: verdict, a bar chart of the metrics against the baseline and
    the thresholds, and a row per question. No script, no external resource."""
    metrics, gates = report["metrics"], report.get("gates", {})
    base = (baseline or {}).get("metrics", {})
    base_items = {r.get("id"): r for r in (baseline or {}).get("items", [])}
    limits = {n: t.split() for n, t in gates.get("thresholds", {}).items()}
    verdict = "passed" if gates.get("passed", True) else "FAILED"
    n_ok = sum(bool(r.get("passed", item_passed(q, r)[0])) for q, r in zip(items,
                                                                          report["items"]))
    fails = "".join(f"<li>{html.escape(f)}</li>" for f in gates.get("failures", []))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in gates.get("notes", []))
    facts = " · ".join(html.escape(f"{k}: {metrics[k]}") for k in (
        "reader_sha256", "embedding_model", "index_generation", "index_documents",
        "n_items", "k") if k in metrics)
    rates = [n for n, v in metrics.items() if _is_rate(n) and number(v)]
    others = [n for n, v in metrics.items() if not _is_rate(n) and number(v)
              and not n.startswith(("n_", "index_")) and n != "k"]
    other_rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{metrics[n]}</td><td>{base.get(n, '')}</td>"
        f"<td>{html.escape(' '.join(limits.get(n, [])))}</td></tr>" for n in others)
    rows = []
    for item, r in zip(items, report["items"]):
        ok = r.get("passed", item_passed(item, r)[0])
        expected = "(abstain)" if item.unanswerable else " | ".join(item.answers)
        retrieved = "".join(f'<li class="{_hit_class(item, h["source"])}">'
                            f'{html.escape(Path(h["source"]).name)}</li>' for h in r["retrieved"])
        cites = "".join(f'<li>[{c["n"]}] {html.escape(Path(c["source"]).name)}: '
                        f'“{html.escape(c["text"])}”</li>' for c in r["citations"])
        answer = "—" if r["answer"] is None else html.escape(r["answer"])
        old = base_items.get(item.id)
        change = ""
        if old is not None and old.get("answer") != r["answer"]:
            change = f'<div class="was">baseline: {html.escape(str(old.get("answer")))}</div>'
        rows.append(
            f'<tr class="{"pass" if ok else "fail"}"><td>{"✔" if ok else "✘"}</td>'
            f"<td>{html.escape(item.id)}</td><td>{html.escape(item.question)}</td>"
            f"<td>{html.escape(expected)}</td><td>{answer}{change}"
            f'{f"<ul class=c>{cites}</ul>" if cites else ""}</td>'
            f"<td><ol>{retrieved}</ol></td><td>{r['latency_s']:.2f}</td></tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
.verdict{{font-weight:bold;padding:6px 10px;display:inline-block;border-radius:4px}}
.passed{{background:#dcf5dc;color:#145214}} .FAILED{{background:#fbdcdc;color:#7a1010}}
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ddd;padding:4px 6px;
vertical-align:top;text-align:left}} th{{background:#f3f3f3}}
tr.fail td:first-child{{color:#b00}} tr.pass td:first-child{{color:#080}}
tr.fail{{background:#fff5f5}} ol,ul{{margin:0;padding-left:18px}} li.hit{{font-weight:bold}}
ul.c{{font-size:12px;color:#555;list-style:none;padding:0;margin-top:4px}}
.was{{font-size:12px;color:#a35a00}} .facts{{color:#555}}
table.m{{width:auto}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><span class="verdict {verdict}">gates {verdict}</span>
&nbsp; {n_ok} of {len(items)} questions passed</p>
{f"<ul>{fails}</ul>" if fails else ""}{f"<ul class=facts>{notes}</ul>" if notes else ""}
<p class="facts">{facts}</p>
<h2>Metrics</h2>
{_metrics_svg(rates, metrics, base, limits)}
<table class="m"><tr><th>metric</th><th>this run</th><th>baseline</th><th>threshold</th></tr>
{other_rows}</table>
<h2>Questions</h2>
<table><tr><th></th><th>id</th><th>question</th><th>accepted</th><th>answer</th>
<th>retrieved (expected source in bold)</th><th>s</th></tr>
{"".join(rows)}
</table></body></html>
"""


def _hit_class(item: QAItem, source: str) -> str:
    return "hit" if any(source_matches(s, source) for s in item.sources) else ""


def _metrics_svg(names: list[str], metrics: dict, base: dict, limits: dict) -> str:
    """Horizontal bars, 0..1: this run (blue), the baseline (grey), the threshold (red tick)."""
    label_w, bar_w, row_h, top = 190, 480, 34, 28
    height = top + row_h * len(names) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 150}" '
             f'height="{height}" role="img" aria-label="metrics against the baseline" '
             'font-family="system-ui,sans-serif" font-size="12">',
             '<rect x="190" y="4" width="12" height="10" fill="#2f6fb5"/>'
             '<text x="206" y="13">this run</text>'
             '<rect x="270" y="4" width="12" height="10" fill="#b5b5b5"/>'
             '<text x="286" y="13">baseline</text>'
             '<rect x="354" y="2" width="2" height="14" fill="#c62828"/>'
             '<text x="362" y="13">threshold</text>']
    for x in (0.0, 0.5, 1.0):
        gx = label_w + x * bar_w
        parts.append(f'<line x1="{gx}" y1="{top - 4}" x2="{gx}" y2="{height - 4}" '
                     'stroke="#e4e4e4"/>')
    for i, name in enumerate(names):
        y = top + i * row_h
        value = max(0.0, min(1.0, float(metrics[name])))
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">'
                     f"{html.escape(name)}{' ↓' if name in LOWER_IS_BETTER else ''}</text>")
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{value * bar_w:.1f}" '
                     f'height="13" fill="#2f6fb5"><title>{html.escape(name)} {metrics[name]}'
                     "</title></rect>")
        label, colour = f"{metrics[name]}", "#222"
        old = base.get(name)
        if number(old):
            ov = max(0.0, min(1.0, float(old)))
            parts.append(f'<rect x="{label_w}" y="{y + 19}" width="{ov * bar_w:.1f}" '
                         f'height="8" fill="#b5b5b5"><title>baseline {old}</title></rect>')
            delta = float(metrics[name]) - float(old)
            if abs(delta) >= 0.00005:
                label += f" ({delta:+.3f})"
                worse = delta > 0 if name in LOWER_IS_BETTER else delta < 0
                colour = "#b00020" if worse else "#1b7a1b"
        if name in limits:
            tx = label_w + max(0.0, min(1.0, float(limits[name][1]))) * bar_w
            parts.append(f'<rect x="{tx - 1:.1f}" y="{y + 1}" width="2" height="29" '
                         f'fill="#c62828"><title>threshold {" ".join(limits[name])}</title>'
                         "</rect>")
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 15}" fill="{colour}">'
                     f"{html.escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)
