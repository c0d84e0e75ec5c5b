"""SQuAD v1.1 dev as an open corpus: every paragraph is a document, a question's gold document
is the paragraph it was written on. Tune on even-numbered questions, report on odd ones.

    .venv/bin/python bench/squad.py retrieval --split odd --n 500
    .venv/bin/python bench/squad.py answers --split odd --n 200

Results go to bench/results_squad.json (merged by section) and bench/results_squad.md.
The data is read from ../shared/data/squad and never copied into the repository."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
WORK = ROOT / "bench" / "work" / "squad"
RESULTS = ROOT / "bench" / "results_squad.json"


def load_squad():
    data = json.loads(DATA.read_text(encoding="utf-8"))
    paragraphs, questions = [], []
    for article in data["data"]:
        for para in article["paragraphs"]:
            pid = f"p{len(paragraphs):04d}"
            paragraphs.append((pid, para["context"]))
            for qa in para["qas"]:
                questions.append({"index": len(questions), "id": qa["id"],
                                  "question": qa["question"],
                                  "answers": [a["text"] for a in qa["answers"]], "doc": pid,
                                  "starts": [a["answer_start"] for a in qa["answers"]]})
    return paragraphs, questions


def split(questions, which: str, n: int):
    parity = 0 if which == "even" else 1
    return [q for q in questions if q["index"] % 2 == parity][:n]


def prepare(settings: Settings, paragraphs) -> dict:
    """Write each paragraph as a file and ingest them; returns timing of the ingest."""
    from rag.ingest import ingest

    docs = WORK / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for pid, text in paragraphs:
        f = docs / f"{pid}.txt"
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    report = ingest([str(docs)], settings)
    return {"ingest_s": round(time.perf_counter() - t0, 2), "chunks_written": report.n_chunks,
            "documents": len(paragraphs)}


def doc_of(source: str) -> str:
    return Path(source).stem


def retrieval(settings: Settings, qs, ks=(1, 5, 10)) -> dict:
    from rag.retrieve import Retriever
    from rag.store import open_store

    store, embedder = open_store(settings)
    out = {}
    off = {"sentences": False, "late": False, "pool_idf": False}
    for name, mode, fusion, parts in (
            ("dense", "dense", "zscore", off), ("lexical", "lexical", "zscore", off),
            ("hybrid_rrf", "hybrid", "rrf", {}),
            ("hybrid_two_lists", "hybrid", "zscore", off),
            ("hybrid_three_lists", "hybrid", "zscore", {"late": False, "pool_idf": False}),
            ("hybrid_with_late", "hybrid", "zscore", {"late": True}),
            ("hybrid_with_late_without_pool_idf", "hybrid", "zscore",
             {"late": True, "pool_idf": False}),
            ("hybrid", "hybrid", "zscore", {})):
        r = Retriever(store, embedder, mode, fusion, **parts)
        ranks = []
        t0 = time.perf_counter()
        for q in qs:
            hits = r.search(q["question"], k=max(ks))
            docs = []
            for h in hits:  # rank by document: several chunks may come from one paragraph
                d = doc_of(h.chunk.source)
                if d not in docs:
                    docs.append(d)
            ranks.append(docs.index(q["doc"]) + 1 if q["doc"] in docs else None)
        dt = time.perf_counter() - t0
        res = {f"R@{k}": round(sum(1 for x in ranks if x and x <= k) / len(ranks), 4)
               for k in ks}
        res["MRR@10"] = round(sum(1 / x for x in ranks if x and x <= 10) / len(ranks), 4)
        res["ms_per_query"] = round(1000 * dt / len(qs), 2)
        out[name] = res
    store.close()
    return out


def answers(settings: Settings, qs, naive: bool = True) -> dict:
    from rag.answer import Answerer
    from rag.citations import strip_markers
    from rag.evaluate import contains_answer, normalize, token_f1

    answerer = Answerer(settings)
    rows = []
    t0 = time.perf_counter()
    for q in qs:
        a = answerer.ask(q["question"])
        text = "" if a.abstained else strip_markers(a.answer)
        row = {"id": q["id"], "question": q["question"], "gold": q["answers"],
               "answer": text, "abstained": a.abstained, "method": a.method,
               "em": float(any(normalize(text) == normalize(g) for g in q["answers"])),
               "f1": token_f1(text, tuple(q["answers"])),
               "contains": contains_answer(text, tuple(q["answers"])),
               "cited_gold": any(doc_of(c.source) == q["doc"] for c in a.citations),
               "verification": a.verification.as_json()}
        if naive:
            nt = naive_answer(answerer, q["question"])
            row.update(naive=nt, naive_em=float(any(normalize(nt) == normalize(g)
                                                    for g in q["answers"])),
                       naive_f1=token_f1(nt, tuple(q["answers"])),
                       naive_contains=contains_answer(nt, tuple(q["answers"])))
        rows.append(row)
    dt = time.perf_counter() - t0
    n = len(rows)

    def avg(key):
        return round(100 * sum(float(r[key]) for r in rows) / n, 2)

    res = {"n": n, "model": answerer.llm.name if naive else "reader", "seconds": round(dt, 1),
           "rag": {"EM": avg("em"), "F1": avg("f1"), "contains": avg("contains"),
                   "abstained": avg("abstained"), "cited_gold_paragraph": avg("cited_gold"),
                   "words_mean": round(sum(len(r["answer"].split()) for r in rows) / n, 2)}}
    if naive:
        res["naive"] = {"EM": avg("naive_em"), "F1": avg("naive_f1"),
                        "contains": avg("naive_contains")}
        res["f1_ratio_rag_over_naive"] = round(res["rag"]["F1"] / max(res["naive"]["F1"], 1e-9),
                                               2)
    answerer.close()
    return res, rows


def naive_answer(answerer, question: str) -> str:
    """The baseline: the same model, the top 5 passages, a plain prompt, free text."""
    hits = answerer.retrieve(question, 5)
    passages = "\n\n".join(h.chunk.text for h in hits)
    gen = answerer.llm.generate("naive", {"passages": passages, "question": question},
                                max_tokens=48)
    return gen.text


def save(section: str, value) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[section] = value
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["prepare", "retrieval", "answers"])
    p.add_argument("--split", choices=["even", "odd"], default="even")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--model", default=None)
    p.add_argument("--style", choices=["quote", "short"], default="quote",
                   help="the answer style (rag ask --style)")
    p.add_argument("--no-naive", action="store_true")
    p.add_argument("--rows", type=Path, default=None, help="write per-question rows here")
    p.add_argument("--save", action="store_true", help="record in bench/results_squad.json")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="chunk size for the index (default: the tool's own)")
    args = p.parse_args()
    settings = Settings.from_env(model=args.model, answer_style=args.style)
    if args.chunk_tokens and args.chunk_tokens != settings.chunk_tokens:
        settings = settings.with_(chunk_tokens=args.chunk_tokens)
        index_dir = WORK / f"index{args.chunk_tokens}"
    else:
        index_dir = WORK / "index"
    settings = settings.with_(index_dir=index_dir)
    paragraphs, questions = load_squad()
    if args.what == "prepare" or not (index_dir / "rag.sqlite").exists():
        info = prepare(settings, paragraphs)
        print(json.dumps(info))
        if args.save:
            save("ingest", info)
    qs = split(questions, args.split, args.n)
    if args.what == "retrieval":
        res = {"split": args.split, "n": len(qs), **retrieval(settings, qs)}
        print(json.dumps(res, indent=2))
        if args.save:
            save(f"retrieval_{args.split}", res)
    elif args.what == "answers":
        res, rows = answers(settings, qs, naive=not args.no_naive)
        res["split"] = args.split
        res["style"] = args.style
        print(json.dumps(res, indent=2))
        if args.rows:
            args.rows.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        if args.save:
            suffix = "" if args.style == "quote" else f"_{args.style}"
            save(f"answers_{args.split}_{res['model']}{suffix}", res)


if __name__ == "__main__":
    main()
