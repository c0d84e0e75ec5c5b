"""How many conflicts ("Sources differ on ...") a default briefing reports where nobody wrote
them down: over one half of the Multi-News sample (../shared/data/multinews, read in place,
each cluster indexed on its own under bench/work/conflicts/) and over the three
natural-question corpora (bench/natural, bench/calibration, bench/calibration_kernel; their
documents fetched first). Every conflict is listed with its aspect, for a person to read and
judge; the seeds' own conflicts are checked by tests/test_brief.py. The checks that keep
compatible statements apart (rag/conflicts.py) were written reading the second half's
conflicts (clusters 50-99) and Debian's; the first half (0-49) is the held-out one.

    .venv/bin/python bench/conflicts.py [--half first|second] [--save]

--save writes bench/results_conflicts.json (counts by aspect; the texts stay in
bench/work/conflicts/conflicts-<half>.json, since they quote the benchmark's articles)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "multinews" / "multinews_representative.jsonl"
WORK = ROOT / "bench" / "work" / "conflicts"
RESULTS = ROOT / "bench" / "results_conflicts.json"
NATURAL = ("natural", "calibration", "calibration_kernel")


def corpora(half: str):
    """(name, settings) of every index to brief, Multi-News clusters first."""
    from bench.briefing import articles
    from bench.natural import indexed
    from rag.ingest import ingest

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    for row in rows[:len(rows) // 2] if half == "first" else rows[len(rows) // 2:]:
        docs = WORK / row["id"] / "docs"
        if not docs.exists():
            docs.mkdir(parents=True)
            for i, text in enumerate(articles(row)):
                (docs / f"{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
        settings = Settings.from_env(index_dir=WORK / row["id"] / "index")
        ingest([str(docs)], settings)
        yield row["id"], settings
    for name in NATURAL:
        yield name, indexed(ROOT / "bench" / name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--half", choices=("first", "second"), default="first",
                   help="the Multi-News clusters: 0-49 (held out) or 50-99")
    p.add_argument("--save", action="store_true", help="write bench/results_conflicts.json")
    args = p.parse_args()
    from bench.machine import cpu_name
    from rag import brief

    t0 = time.perf_counter()
    found: dict[str, list[dict]] = {}
    for name, settings in corpora(args.half):
        found[name] = [{"aspect": c.aspect, "text": c.text}
                       for c in brief.build(settings).conflicts]
        for c in found[name]:
            print(f"{name} | {c['aspect']} | {c['text']}", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"conflicts-{args.half}.json").write_text(json.dumps(found, indent=1) + "\n")
    multinews = [c for name, cs in found.items() if name not in NATURAL for c in cs]
    res = {"cpu": cpu_name(), "seconds": round(time.perf_counter() - t0, 1),
           f"multinews_{args.half}_half": {"clusters": len(found) - len(NATURAL),
                                  "conflicts": len(multinews),
                                  "by_aspect": dict(Counter(c["aspect"] for c in multinews))},
           **{name: {"conflicts": len(found[name]),
                     "by_aspect": dict(Counter(c["aspect"] for c in found[name]))}
              for name in NATURAL}}
    print(json.dumps(res, indent=2))
    if args.save:
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
