"""Follow-up questions in `rag chat`: how should a follow-up become a search query?

    .venv/bin/python bench/followups.py [--distractors 500] [--methods raw,clean,rules,...]

Each dialogue of seeds/followups.jsonl is played turn by turn, the way `rag chat` plays it
(each method's own earlier queries and answers are the context of its next turn). Scored on
the follow-up turns (every turn after the first):

  source_R@5   a retrieved passage comes from one of the turn's source documents
  answer_R@5   a retrieved passage holds one of the accepted answers
  accuracy     the answer holds an accepted answer in at most 40 words, as `rag eval` counts
               it (an unanswerable turn: it abstains)

Methods (the query searched / the question the answer is phrased and checked against):
  raw          the follow-up as typed, for both
  clean        a leading "And"/"So" removed, for both
  rules-split  rules rewrite carrying the previous turn's subject and named entities / the
               cleaned follow-up
  rules-entities  as rules-split, and when that abstains, the rewrite for both
  rules        rules rewrite carrying the previous turn's content words (at most 16, newest
               first) / the cleaned follow-up, and the rewrite for both when that abstains:
               what `rag chat` does
  rules-joint  rules rewrite carrying subject and entities, for both
  llm          the answer model's rewrite (prompts/rewrite.*), used as in rules
  llm-joint    the model's rewrite, for both

Two corpora: the three seed articles alone, and the seeds among --distractors SQuAD dev
paragraphs (from ../shared/data/squad, as bench/squad.py writes them under bench/work/squad/),
where a query that lost its subject finds other documents.
Writes bench/results_followups.json and bench/results_followups.md; with --methods, the
methods named replace their earlier results and the others are kept."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

DIALOGUES = ROOT / "seeds" / "followups.jsonl"
WORK = ROOT / "bench" / "work" / "followups"
SQUAD_DOCS = ROOT / "bench" / "work" / "squad" / "docs"
RESULTS = ROOT / "bench" / "results_followups.json"
METHODS = ("raw", "clean", "rules-split", "rules-entities", "rules", "rules-joint", "llm",
           "llm-joint")


def load_dialogues(path: Path = DIALOGUES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def corpus(name: str, distractors: int, work: Path = WORK) -> Settings:
    """An index over the seed articles, with `distractors` SQuAD paragraphs or none."""
    from rag.ingest import ingest

    docs = work / name / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for f in sorted((ROOT / "seeds").glob("*.txt")):
        shutil.copy(f, docs / f.name)
    if distractors:
        paragraphs = sorted(SQUAD_DOCS.glob("p*.txt"))[:distractors]
        if len(paragraphs) < distractors:
            raise SystemExit(f"{SQUAD_DOCS}: {len(paragraphs)} paragraphs; run "
                             "bench/squad.py retrieval once to write them")
        for f in paragraphs:
            shutil.copy(f, docs / f.name)
    # the style `rag chat` answers in, unless RAG_ANSWER_STYLE says otherwise
    from rag.chat import DEFAULT_STYLE

    settings = Settings.from_env(index_dir=work / name / "index")
    if not os.environ.get("RAG_ANSWER_STYLE"):
        settings = settings.with_(answer_style=DEFAULT_STYLE)
    ingest([str(docs)], settings)
    return settings


def turn_query(method: str, answerer, question: str, prev_query: str | None,
               prev_answer: str):
    from rag.rewrite import Rewrite, rewrite_llm, rewrite_rules, strip_connector

    if method == "raw":
        return Rewrite(question, question, "unchanged"), False
    if method == "clean":
        clean = strip_connector(question)
        return Rewrite(clean, clean, "unchanged"), False
    if method.startswith("rules"):
        carry = "words" if method == "rules" else "entities"
        return rewrite_rules(question, prev_query, prev_answer, carry), method.endswith("joint")
    return rewrite_llm(answerer.llm, question, prev_query, prev_answer), method.endswith("joint")


def answer_turn(answerer, rw, joint: bool, split_only: bool, k: int):
    if joint:
        return answerer.ask(rw.query, k)
    if split_only:
        answerer.search_query = rw.query if rw.rewritten else None
        try:
            return answerer.ask(rw.question, k)
        finally:
            answerer.search_query = None
    return answerer.ask_turn(rw, k)


def play(settings: Settings, dialogues: list[dict], methods: list[str], k: int = 5) -> dict:
    from rag.chat import ChatAnswerer
    from rag.citations import strip_markers
    from rag.evaluate import answer_right, contains_answer, source_matches

    answerer = ChatAnswerer(settings)
    memo: dict[tuple[str, str, bool, bool], object] = {}
    out: dict = {}
    for method in methods:
        rows = []
        t_rewrite = 0.0
        for d in dialogues:
            prev_query, prev_answer = None, ""
            for i, turn in enumerate(d["turns"]):
                t0 = time.perf_counter()
                rw, joint = turn_query(method, answerer, turn["question"], prev_query,
                                       prev_answer)
                t_rewrite += time.perf_counter() - t0 if i else 0.0
                split_only = method.endswith("split")
                key = (rw.question, rw.query, joint, split_only)
                if key not in memo:
                    memo[key] = answer_turn(answerer, rw, joint, split_only, k)
                a = memo[key]
                answers = tuple(turn["answers"])
                hits = a.hits[:k]
                if turn["unanswerable"]:
                    correct = a.abstained
                else:
                    # right as `rag eval` counts it: an accepted answer in at most 40 words
                    correct = (not a.abstained) and answer_right(strip_markers(a.answer),
                                                                 answers)
                rows.append({
                    "id": f"{d['id']}.{i + 1}", "follow_up": i > 0,
                    "question": turn["question"], "query": rw.query, "method": rw.method,
                    # an answer quoted from a benchmark paragraph is benchmark data: not kept
                    "answer": None if any(Path(c.source).name.startswith("p")
                                          for c in a.citations) else a.answer,
                    "correct": correct,
                    "source_hit": (not turn["unanswerable"]) and any(
                        source_matches(s, Path(h.chunk.source).name)
                        for h in hits for s in turn["sources"]),
                    "answer_hit": (not turn["unanswerable"]) and any(
                        contains_answer(h.chunk.text, answers) for h in hits),
                    "unanswerable": turn["unanswerable"],
                })
                prev_query, prev_answer = rw.query, "" if a.abstained else a.answer
        out[method] = {"metrics": metrics(rows, t_rewrite), "turns": rows}
        m = out[method]["metrics"]
        print(f"  {method:<12} source_R@5 {m['source_R@5']:.3f}  answer_R@5 "
              f"{m['answer_R@5']:.3f}  accuracy {m['accuracy']:.3f}  "
              f"(first turns {m['first_turn_accuracy']:.3f})", file=sys.stderr)
    answerer.close()
    return out


def metrics(rows: list[dict], t_rewrite: float) -> dict:
    follow = [r for r in rows if r["follow_up"]]
    answerable = [r for r in follow if not r["unanswerable"]]
    first = [r for r in rows if not r["follow_up"]]

    def rate(xs, key):
        return round(sum(1 for r in xs if r[key]) / len(xs), 4) if xs else None

    return {"follow_ups": len(follow), "source_R@5": rate(answerable, "source_hit"),
            "answer_R@5": rate(answerable, "answer_hit"), "accuracy": rate(follow, "correct"),
            "rewritten": sum(1 for r in follow if r["query"] != r["question"]),
            "first_turn_accuracy": rate(first, "correct"),
            "rewrite_s_per_follow_up": round(t_rewrite / max(1, len(follow)), 3)}


def markdown(results: dict) -> str:
    lines = ["# Follow-up questions: which query to search", "",
             f"{results['dialogues']} dialogues, {results['follow_ups']} follow-up turns "
             "(seeds/followups.jsonl), bundled models "
             f"({results['model']}, all-MiniLM-L6-v2), k=5, at commit "
             f"{results.get('commit', '?')}. `python bench/followups.py`. The answer pipeline "
             "under the methods keeps improving: compare methods within one run, not across "
             "runs.", ""]
    for name, corp in results["corpora"].items():
        lines += [f"## {name}", "", "| method | source R@5 | answer R@5 | accuracy | query "
                  "differs from what was typed | rewrite s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method, r in corp.items():
            m = r["metrics"]
            lines.append(f"| {method} | {m['source_R@5']:.3f} | {m['answer_R@5']:.3f} | "
                         f"{m['accuracy']:.3f} | {m['rewritten']}/{m['follow_ups']} | "
                         f"{m['rewrite_s_per_follow_up']:.2f} |")
        lines.append("")
    lines += ["Method key: see the docstring of bench/followups.py. Accuracy counts an "
              "abstention as right on the one unanswerable follow-up. `rules` is what "
              "`rag chat` does; `llm` is `rag chat --rewrite llm`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distractors", type=int, default=500)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", type=Path, default=WORK,
                    help="where the indexes are built (one per concurrent run)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    dialogues = load_dialogues()
    from rag.registry import default_llm_name

    results = {"dialogues": len(dialogues),
               "follow_ups": sum(len(d["turns"]) - 1 for d in dialogues),
               "model": default_llm_name(Settings.from_env()), "corpora": {}}
    import subprocess

    results["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip()
    corpora = [("seeds", 0)] + ([(f"seeds + {args.distractors} SQuAD paragraphs",
                                  args.distractors)] if args.distractors else [])
    for name, n in corpora:
        print(f"{name}:", file=sys.stderr)
        settings = corpus("seeds" if not n else f"squad{n}", n, args.work)
        results["corpora"][name] = play(settings, dialogues, methods)
    if RESULTS.exists() and set(methods) != set(METHODS):  # keep the other methods' results
        earlier = json.loads(RESULTS.read_text(encoding="utf-8"))["corpora"]
        for name, played in results["corpora"].items():
            kept = earlier.get(name, {})
            results["corpora"][name] = {m: played.get(m) or kept[m] for m in METHODS
                                        if m in played or m in kept}
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    RESULTS.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {RESULTS} and {RESULTS.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
