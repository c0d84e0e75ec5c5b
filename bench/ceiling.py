"""How many questions could the answer path get right at best? For each span question of a
natural-question set (requests, yes/no questions and follow-ups left out), asked as `rag ask`
asks it:

- retrieval: an accepted answer stands in one of the k passages retrieved (recall@k), or in the
  first of them;
- reader: the best span over all passages holds an accepted answer (`best_span`: what rag
  could get right if its answerability model abstained on exactly the wrong spans and no
  other); the best span among the passages that hold an answer (`passage_given`: the passage
  chosen by an oracle); any of each passage's three best spans (`any_top3`);
- the answer path: what `rag ask` prints when its answerability threshold is set to 0, so that
  it answers every question (`printed`: the span, or for a why question or an unsupported span
  the sentence that holds it).

Each is a share of the set's answerable span questions. No number here moves a threshold: the
development sets (bench/calibration, bench/calibration_kernel) and bench/natural are read
alike, to say where the answers are lost.

    .venv/bin/python bench/ceiling.py [--sets natural,calibration,calibration_kernel] [--save]

Each set's documents must be fetched first (`bash bench/<set>/fetch_docs.sh`). --save writes
bench/results_ceiling.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results_ceiling.json"
SETS = ("natural", "calibration", "calibration_kernel")
MEASURES = ("recall_at_k", "recall_at_1", "any_top3", "passage_given", "best_span", "printed")


def span_questions(path: Path) -> list[dict]:
    """The answerable questions a span answers: not requests, yes/no questions or follow-ups."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    return [q for q in items if not q["unanswerable"] and not q.get("follows")
            and q["kind"] not in ("instruction", "yesno")]


def measure(settings: Settings, questions: list[dict]) -> dict:
    from dataclasses import replace

    from rag.answer import Answerer
    from rag.citations import strip_markers
    from rag.display import fit_question
    from rag.evaluate import contains_answer
    from rag.reading import ReaderPath

    answerer = Answerer(settings)
    shipped = answerer.reading.calibration
    # the answer path as shipped, but answering every question it finds a span for
    always = ReaderPath(settings, answerer.embedder, replace(
        shipped, answer_margin=float("-inf"),
        answerability=shipped.answerability and replace(shipped.answerability, threshold=0.0)))
    reader = always.reader
    counts = dict.fromkeys(MEASURES, 0)
    by_kind: dict[str, dict[str, int]] = {}
    try:
        for item in questions:
            question, gold = fit_question(item["question"].strip()), tuple(item["answers"])
            hits = answerer.retrieve(question)
            texts = [h.chunk.text for h in hits]
            spans = [s for per in reader.read(question, texts, top=3) for s in per]
            spans.sort(key=lambda s: -s.margin)
            holds = [contains_answer(t, gold) for t in texts]
            right = [contains_answer(texts[s.passage][s.start:s.end], gold) for s in spans]
            given = [ok for s, ok in zip(spans, right) if holds[s.passage]]
            got = {"recall_at_k": any(holds), "recall_at_1": bool(holds) and holds[0],
                   "any_top3": any(right), "passage_given": bool(given) and given[0],
                   "best_span": bool(right) and right[0],
                   "printed": contains_answer(strip_markers(
                       always.answer(question, hits, 0.0, 0.0).answer), gold)}
            kind = by_kind.setdefault(item["kind"], {"n": 0, "best_span": 0, "printed": 0})
            kind["n"] += 1
            kind["best_span"] += got["best_span"]
            kind["printed"] += got["printed"]
            for m in MEASURES:
                counts[m] += got[m]
    finally:
        answerer.close()
    n = len(questions)
    return {"questions": n, "k": len(hits) if questions else 0,
            **{m: round(counts[m] / max(1, n), 3) for m in MEASURES}, "by_kind": by_kind}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--save", action="store_true", help="write bench/results_ceiling.json")
    args = p.parse_args()
    from bench.machine import cpu_name
    from bench.natural import indexed

    out: dict = {"cpu": cpu_name(), "sets": {}}
    t0 = time.perf_counter()
    for name in args.sets.split(","):
        folder = ROOT / "bench" / name
        res = measure(indexed(folder), span_questions(folder / "questions.jsonl"))
        out["sets"][name] = res
        print(name, json.dumps({m: res[m] for m in ("questions", *MEASURES)}), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.save:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
