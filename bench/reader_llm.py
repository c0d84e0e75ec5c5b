"""Does the GGUF model help the reader choose its answer? On the held-out even SQuAD questions
(index % 20 == 0, never trained on), each asked over the five passages rag retrieves: the
reader's best span alone, against the GGUF model choosing among the reader's best three spans
(llama.cpp scores each as the continuation of the answer prompt over the span's sentence; the
reader's own margin added, with weight 0 or 1).

    .venv/bin/python bench/reader_llm.py [--model smollm2] [--n 265]

Writes bench/results_reader.json's "llm_chooses" section."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=265)
    args = p.parse_args()

    from bench.machine import cpu_name
    from bench.squad import WORK as SQUAD_WORK
    from bench.train_reader import RESULTS, _load_results, squad
    from rag.evaluate import token_f1
    from rag.llm import get_llm
    from rag.reader import Reader
    from rag.reading import _sentence_around
    from rag.registry import resolve_llm
    from rag.retrieve import Retriever
    from rag.store import open_store

    _, questions = squad()
    held = [q for q in questions if q["index"] % 20 == 0][:args.n]
    settings = Settings.from_env(index_dir=SQUAD_WORK / "index", model=args.model)
    store, embedder = open_store(settings)
    retriever = Retriever(store, embedder, "hybrid")
    reader = Reader(embedder.minilm())
    llm = get_llm(resolve_llm(settings.model, settings), settings)
    f1 = {"reader": 0.0, "llm": 0.0, "llm_plus_margin": 0.0}
    t_llm = 0.0
    for q in held:
        gold = tuple(q["answers"])
        hits = retriever.search(q["question"], 5)
        spans = sorted((s for per in reader.read(q["question"], [h.chunk.text for h in hits])
                        for s in per), key=lambda s: -s.margin)[:3]
        texts = [hits[s.passage].chunk.text[s.start:s.end] for s in spans]
        f1["reader"] += token_f1(texts[0], gold)
        t0 = time.perf_counter()
        scores = []
        for s, text in zip(spans, texts):
            chunk = hits[s.passage].chunk.text
            a, b = _sentence_around(chunk, s.start, s.end)
            values = {"passages": chunk[a:b], "question": q["question"]}
            ends = llm.score_continuations("answer", values, [text], [[len(text)]])[0]
            scores.append(ends[-1][1] if ends else -99.0)
        t_llm += time.perf_counter() - t0
        best = max(range(len(spans)), key=lambda i: scores[i])
        f1["llm"] += token_f1(texts[best], gold)
        both = max(range(len(spans)), key=lambda i: scores[i] + spans[i].margin)
        f1["llm_plus_margin"] += token_f1(texts[both], gold)
    store.close()
    res = {"n": len(held), "model": llm.name, "cpu": cpu_name(),
           **{f"F1_{k}": round(100 * v / len(held), 2) for k, v in f1.items()},
           "llm_ms_per_question": round(1000 * t_llm / len(held), 1)}
    print(json.dumps(res, indent=2))
    results = _load_results()
    results["llm_chooses"] = res
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
