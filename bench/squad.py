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
               "verification": a.verification}
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

    res = {"n": n, "model": answerer.llm.name, "seconds": round(dt, 1),
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


def unseen_margin(answerer, question: str) -> float:
    """The lowest closeness of an unseen question word to the retrieved words (1.0 when every
    word is mentioned somewhere): the question abstains when this is below the threshold."""
    from rag import evidence as ev

    hits = answerer.retrieve(question)
    closeness = ev.unseen_closeness(question, hits, answerer.embedder, answerer.store.mentions)
    return min(closeness.values(), default=1.0)


def abstention(settings: Settings, qs, thresholds=(0.5, 0.55, 0.6, 0.65, 0.7)) -> dict:
    """Calibration of the unseen-word abstention: on SQuAD every question is answerable, so
    each abstention is a false one; on seeds/qa.jsonl the unanswerable pairs say how many are
    caught. Retrieval and word embeddings only: no model."""
    from rag.answer import Answerer

    out: dict = {}
    answerer = Answerer(settings)
    margins = [unseen_margin(answerer, q["question"]) for q in qs]
    answerer.close()
    out["squad_false_abstention"] = {str(t): round(sum(m < t for m in margins) / len(qs), 4)
                                     for t in thresholds}
    seeds_index = WORK.parent / "seeds-index"
    seed_settings = settings.with_(index_dir=seeds_index)
    from rag.ingest import ingest

    ingest([str(p) for p in sorted((ROOT / "seeds").glob("*.txt"))], seed_settings)
    pairs = [json.loads(line) for line in (ROOT / "seeds" / "qa.jsonl").read_text().splitlines()
             if line.strip()]
    answerer = Answerer(seed_settings)
    seed_margins = [(p["unanswerable"], unseen_margin(answerer, p["question"])) for p in pairs]
    answerer.close()
    n_un = sum(u for u, _ in seed_margins)
    n_an = len(seed_margins) - n_un
    out["seeds_abstained_unanswerable"] = {
        str(t): round(sum(u and m < t for u, m in seed_margins) / n_un, 4) for t in thresholds}
    out["seeds_false_abstention"] = {
        str(t): round(sum((not u) and m < t for u, m in seed_margins) / n_an, 4)
        for t in thresholds}
    out["n_squad"] = len(qs)
    return out


def evidence(settings: Settings, qs) -> dict:
    """The answer pipeline without the model: for each question, does the first retrieved
    sentence that fits the kind of answer asked for hold a gold answer, and does the part of it
    the Answerer would quote (rag.evidence.quote_window)? Fast enough to tune ranking on."""
    from rag import evidence as ev
    from rag.answer import QUOTE_WORDS, Answerer
    from rag.evaluate import contains_answer, token_f1

    answerer = Answerer(settings)
    sent_ok = quote_ok = withheld = unfit = other = slots = slot_ok = 0
    f1 = words = 0.0
    t0 = time.perf_counter()
    for q in qs:
        hits = answerer.retrieve(q["question"])
        ranked = ev.rank_sentences(q["question"], hits, answerer.embedder)
        top, told, verification = answerer.select(q["question"], hits, ranked)
        kind = verification["answer_kind"]
        if top is None:
            if told is not None:
                withheld += 1
            elif verification["reason"].startswith("no retrieved sentence holds"):
                unfit += 1
            else:
                other += 1
            continue
        gold = tuple(q["answers"])
        slot = ev.answer_slot(q["question"], top.text) if kind != "yesno" else None
        if slot is not None:
            slots += 1
            slot_ok += contains_answer(top.text[slot[0]:slot[1]], gold)
        a, b = ev.quote_window(q["question"], top.text, kind, [s.text for s in ranked],
                               QUOTE_WORDS, slot)
        sent_ok += contains_answer(top.text, gold)
        quote_ok += contains_answer(top.text[a:b], gold)
        f1 += token_f1(top.text[a:b], gold)
        words += len(top.text[a:b].split())
    n = len(qs)
    answerer.close()
    return {"n": n, "sentence_holds_answer": round(sent_ok / n, 4),
            "quote_holds_answer": round(quote_ok / n, 4), "quote_f1": round(100 * f1 / n, 2),
            "quote_words_mean": round(words / n, 2),
            "abstained_withheld": withheld, "abstained_no_fitting_sentence": unfit,
            "abstained_other": other, "answered_by_slot": slots, "slot_holds_answer": slot_ok,
            "seconds": round(time.perf_counter() - t0, 1)}


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
    p.add_argument("what", choices=["prepare", "retrieval", "answers", "abstention", "evidence"])
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
    elif args.what == "evidence":
        res = {"split": args.split, **evidence(settings, qs)}
        print(json.dumps(res, indent=2))
        if args.save:
            save(f"evidence_{args.split}", res)
    elif args.what == "abstention":
        res = {"split": args.split, **abstention(settings, qs)}
        print(json.dumps(res, indent=2))
        if args.save:
            save(f"abstention_{args.split}", res)
    elif args.what == "answers":
        res, rows = answers(settings, qs, naive=not args.no_naive)
        res["split"] = args.split
        res["style"] = args.style
        print(json.dumps(res, indent=2))
        if args.rows:
            args.rows.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        if args.save:
            suffix = ("" if args.style == "quote" else f"_{args.style}") + \
                ("" if settings.reader else "_rules")
            save(f"answers_{args.split}_{res['model']}{suffix}", res)


if __name__ == "__main__":
    main()
