"""rag over the natural-question set (bench/natural/): questions as people type them over
documents rag was never tuned on (A Brief History of Debian, from Debian's debian-history
package). Each question is asked as `rag ask` asks it; a follow-up is asked as `rag chat` asks
it, after the question it follows.

    bash bench/natural/fetch_docs.sh && .venv/bin/python bench/natural.py [--save]

The same run over the answerability model's calibration set (bench/calibration/, never saved:
it is not a measure of rag, since the model was fitted on it):

    bash bench/calibration/fetch_docs.sh
    .venv/bin/python bench/natural.py --set bench/calibration

Scoring, per item:
- answerable: right when rag answers and an accepted answer appears in what it says (case,
  punctuation and white space folded, as `rag eval`); wrong ("confidently wrong") when it
  answers with none; abstained otherwise;
- yes/no: right when the quoted evidence holds the item's key fact words (rag answers a yes/no
  question by quoting the sentence that settles it; it does not say yes or no itself);
- instruction: right when the briefing mentions at least half of the item's key terms;
- unanswerable: right when rag abstains, wrong when it answers.

`answerability_auc`: how well the answerability chance sorts the reader's right best spans above
its wrong ones here.

Writes bench/results_natural.json (the summary) and bench/work/natural/rows.jsonl."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

SET = ROOT / "bench" / "natural"
RESULTS = ROOT / "bench" / "results_natural.json"


def score(item: dict, answer) -> str:
    from rag.citations import strip_markers
    from rag.evaluate import contains_answer

    if item["unanswerable"]:
        return "right" if answer.abstained else "wrong"
    if answer.abstained:
        return "abstained"
    text = strip_markers(answer.answer)
    if item["kind"] == "instruction":
        found = sum(contains_answer(text, (term,)) for term in item["answers"])
        return "right" if 2 * found >= len(item["answers"]) else "wrong"
    accepted = item["answers"]
    if item["kind"] == "yesno":
        facts = tuple(a for a in accepted if a.lower() not in ("yes", "no"))
        if not facts:
            return "unscored"
        return "right" if contains_answer(text, facts) else "wrong"
    return "right" if contains_answer(text, tuple(accepted)) else "wrong"


def run(settings: Settings, questions: Path = SET / "questions.jsonl") -> tuple[dict, list[dict]]:
    from rag.chat import Session

    items = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    session = Session(settings, out=open("/dev/null", "w"), err=open("/dev/null", "w"))
    rows = []
    t0 = time.perf_counter()
    for item in items:
        if not item.get("follows"):
            session.conversation.reset()
        t = time.perf_counter()
        answer = session.ask(item["question"])
        latency = time.perf_counter() - t
        verdict = score(item, answer)
        rows.append({"id": item["id"], "kind": item["kind"], "tempting": item["tempting"],
                     "question": item["question"], "gold": item["answers"],
                     "answer": answer.answer, "abstained": answer.abstained,
                     "method": answer.method, "verdict": verdict,
                     "latency_s": round(latency, 3),
                     "verification": answer.verification.as_json()})
    session.close()
    return summarise(rows, time.perf_counter() - t0), rows


def summarise(rows: list[dict], seconds: float) -> dict:
    answerable = [r for r in rows if r["kind"] != "unanswerable" and r["verdict"] != "unscored"]
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]
    tempting = [r for r in unanswerable if r["tempting"]]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_kind[r["kind"]][r["verdict"]] += 1
    n = len(answerable)
    return {
        "items": len(rows),
        "answerable_scored": n,
        "answerable_right": round(sum(r["verdict"] == "right" for r in answerable) / n, 3),
        "answerable_wrong": round(sum(r["verdict"] == "wrong" for r in answerable) / n, 3),
        "answerable_abstained": round(sum(r["verdict"] == "abstained" for r in answerable) / n,
                                      3),
        "confidently_wrong_of_all": round(sum(r["verdict"] == "wrong" for r in rows)
                                          / len(rows), 3),
        "unanswerable_abstained": round(sum(r["abstained"] for r in unanswerable)
                                        / max(1, len(unanswerable)), 3),
        "tempting_abstained": round(sum(r["abstained"] for r in tempting) / max(1, len(tempting)),
                                    3),
        "unscored_yesno": sum(r["verdict"] == "unscored" for r in rows),
        "answerability_auc": answerability_auc(rows),
        "right_at_wrong": right_at_wrong(rows),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "seconds": round(seconds, 1),
    }


def span_verdicts(rows: list[dict]) -> tuple[list[tuple[float, str]], int]:
    """The questions a span answers (requests and yes/no questions left out) with an
    answerability chance, each as (chance, verdict): "right" when its best span holds an
    accepted answer, "wrong" when it does not, "unanswerable" for a question the documents do
    not answer; and how many answerable questions there are, chance or not."""
    from rag.evaluate import contains_answer

    scored, answerable = [], 0
    for r in rows:
        if r["kind"] in ("instruction", "yesno"):
            continue
        answerable += r["kind"] != "unanswerable"
        chance = r["verification"].get("answerable_chance")
        if chance is None:
            continue
        span = r["verification"].get("best_span") or ""
        verdict = "unanswerable" if r["kind"] == "unanswerable" else \
            "right" if contains_answer(span, tuple(r["gold"])) else "wrong"
        scored.append((chance, verdict))
    return scored, answerable


def right_at_wrong(rows: list[dict], caps=(0.05, 0.10, 0.15, 0.20)) -> dict[str, dict]:
    """The most of the answerable questions whose best span holds an accepted answer that any
    threshold on the answerability chance answers while answering at most `cap` of them with a
    span that does not (and how many unanswerable questions it answers there). A reader's
    numbers apart from where its threshold sits: two readers compare here at the same share of
    wrong answers."""
    scored, answerable = span_verdicts(rows)
    scored.sort(key=lambda item: -item[0])
    best = {str(cap): {"right": 0.0, "wrong": 0.0, "unanswerable_answered": 0} for cap in caps}
    seen = Counter()
    for at, (chance, verdict) in enumerate(scored):
        seen[verdict] += 1
        if at + 1 < len(scored) and scored[at + 1][0] == chance:
            continue  # a threshold answers every question of one chance, or none
        for cap in caps:
            if seen["wrong"] <= cap * answerable:
                best[str(cap)] = {"right": round(seen["right"] / max(1, answerable), 3),
                                  "wrong": round(seen["wrong"] / max(1, answerable), 3),
                                  "unanswerable_answered": seen["unanswerable"]}
    return best


def answerability_auc(rows: list[dict]) -> float | None:
    """ROC AUC of the answerability chance: the questions whose best span holds an accepted
    answer against those whose best span does not (unanswerable ones included). How well the
    model carries to questions it was not fitted on."""
    from bench.train_reader import auc

    scored, _ = span_verdicts(rows)
    right = [chance for chance, verdict in scored if verdict == "right"]
    other = [chance for chance, verdict in scored if verdict != "right"]
    if not right or not other:
        return None
    return round(auc(right, other), 3)


def indexed(folder: Path) -> Settings:
    """The settings of a question set's index (bench/work/<folder name>/index), its fetched
    documents ingested; exits naming the fetch script when they are not there."""
    from rag.ingest import ingest

    work = ROOT / "bench" / "work" / folder.name
    if not any((work / "docs").glob("*.txt")):
        sys.exit(f"{work / 'docs'}: no documents; run `bash {folder}/fetch_docs.sh` first")
    settings = Settings.from_env(index_dir=work / "index")
    ingest([str(work / "docs")], settings)
    return settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--save", action="store_true", help="write bench/results_natural.json")
    p.add_argument("--set", default=str(SET), help="a question set's folder (bench/calibration "
                   "is the answerability model's calibration set: measured, never saved)")
    args = p.parse_args()
    folder = Path(args.set)
    res, rows = run(indexed(folder), folder / "questions.jsonl")
    rows_file = ROOT / "bench" / "work" / folder.name / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(res, indent=2))
    if args.save and folder.resolve() == SET.resolve():
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
