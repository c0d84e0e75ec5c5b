"""Trains the verifier (rag.reader.Reader.verify): a second adapter on all-MiniLM-L6-v2 that reads
a question beside a span the reader chose and the sentence around it, and gives the log-odds
that the span answers the question. The answerability model reads it beside the reader's own
scores (rag.reading.FEATURES, "verified").

It learns from the reader's own mistakes on SQuAD v1.1 dev *even*-numbered questions (the
same training questions as the reader; every twentieth, index % 20 == 0, is held out): the
reader's best spans in the question's own paragraph, right (token F1 >= 0.5) or wrong, the
gold answer where the reader missed it, and the reader's best spans in a passage rag's
retrieval ranks high that holds no answer.

    .venv/bin/python bench/train_verifier.py            # `make train`, after the reader
    .venv/bin/python bench/train_verifier.py --quick 300

Starts from the reader's adapter (it already reads questions against passages); writes
rag/weights/verifier.safetensors and its checksum, and its held-out numbers to
bench/results_reader.json ("verifier")."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_reader import (  # noqa: E402
    RESULTS, WORK, _cpu, _load_results, _pad, auc, batches, retrieved_negatives, squad)
from rag.config import Settings  # noqa: E402

SPANS_GOLD = 4  # the reader's best spans read from the question's own paragraph
SPANS_NEGATIVE = 2  # and from a retrieved passage without the answer


def candidates(reader, questions, texts, negatives) -> list[dict]:
    """(question, span, sentence, label) rows from the reader's readings (see the module's
    docstring), each with the reader's margin for the span (None for a gold answer the reader
    did not find) and where it was read ("gold" paragraph or "negative" passage)."""
    from rag.evaluate import token_f1
    from rag.reading import _sentence_around, fold

    out = []
    for n, q in enumerate(questions, 1):
        if n % 500 == 0:
            print(f"{n}/{len(questions)} questions read", file=sys.stderr, flush=True)
        gold = tuple(q["answers"])
        ctx = texts[q["doc"]]
        found = False
        for s in reader.read(q["question"], [ctx], top=SPANS_GOLD)[0]:
            a, b = _sentence_around(ctx, s.start, s.end)
            right = token_f1(ctx[s.start:s.end], gold) >= 0.5
            found |= right
            out.append({"q": q["index"], "question": q["question"], "span": ctx[s.start:s.end],
                        "sentence": ctx[a:b], "label": float(right), "margin": s.margin,
                        "where": "gold"})
        if not found:
            a0 = q["starts"][0]
            a1 = a0 + len(q["answers"][0])
            a, b = _sentence_around(ctx, a0, a1)
            out.append({"q": q["index"], "question": q["question"], "span": ctx[a0:a1],
                        "sentence": ctx[a:b], "label": 1.0, "margin": None, "where": "gold"})
        folded = [fold(x) for x in gold]
        for neg in negatives.get(q["index"], [])[:1]:
            for s in reader.read(q["question"], [neg], top=SPANS_NEGATIVE)[0]:
                a, b = _sentence_around(neg, s.start, s.end)
                if any(x in fold(neg[s.start:s.end]) for x in folded):
                    continue
                out.append({"q": q["index"], "question": q["question"],
                            "span": neg[s.start:s.end], "sentence": neg[a:b], "label": 0.0,
                            "margin": s.margin, "where": "negative"})
    return out


def _candidates_cached(reader_weights: Path, questions, texts, negatives, name: str):
    digest = hashlib.sha256(reader_weights.read_bytes()).hexdigest()[:16]
    cache = WORK / f"verifier-{name}-{digest}-{len(questions)}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from rag.reader import READER_BASE, Reader, load_base
    from rag.registry import resolve_embedding

    base = load_base(resolve_embedding(READER_BASE, Settings.from_env()).path)
    rows = candidates(Reader(base, reader_weights), questions, texts, negatives)
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows


def evaluate(verifier, rows) -> dict:
    """On held-out questions: how well the verifier's log-odds and the reader's margin sort
    right spans above wrong ones; and, a question at a time, the reader's best span in its own
    paragraph when right against its best span in a passage without the answer (what
    answerability has to tell apart)."""
    import numpy as np

    by_q: dict[int, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["q"], []).append(r)
    scored = []
    for q_rows in by_q.values():
        got = verifier.verify(q_rows[0]["question"], [(r["span"], r["sentence"]) for r in q_rows])
        scored += [{**r, "verified": v} for r, v in zip(q_rows, got)]
    read = [r for r in scored if r["margin"] is not None]
    label = np.array([r["label"] for r in read])
    ver = np.array([r["verified"] for r in read])
    mar = np.array([r["margin"] for r in read])
    pos, neg = [], []
    for q in by_q:
        mine = [r for r in read if r["q"] == q]
        top_gold = max((r for r in mine if r["where"] == "gold"), key=lambda r: r["margin"],
                       default=None)
        top_neg = max((r for r in mine if r["where"] == "negative"), key=lambda r: r["margin"],
                      default=None)
        if top_gold is not None and top_gold["label"] == 1.0:
            pos.append(top_gold)
        if top_neg is not None:
            neg.append(top_neg)
    return {
        "questions": len(by_q), "spans": len(read), "right": int(label.sum()),
        "auc_spans": {"verifier": round(auc(ver[label == 1], ver[label == 0]), 3),
                      "margin": round(auc(mar[label == 1], mar[label == 0]), 3)},
        "auc_best_right_vs_wrong_passage": {
            "verifier": round(auc([r["verified"] for r in pos], [r["verified"] for r in neg]),
                              3),
            "margin": round(auc([r["margin"] for r in pos], [r["margin"] for r in neg]), 3)}}


def train(args) -> None:
    import torch

    from rag.reader import (READER_BASE, VERIFIER, WEIGHTS, Reader, ReaderModel, load_adapter,
                            load_base, save_adapter, verify_row)
    from rag.registry import resolve_embedding

    out = Path(args.weights)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    texts, questions = squad()
    even = [q for q in questions if q["index"] % 2 == 0]
    train_qs = [q for q in even if q["index"] % 20 != 0]
    held = [q for q in even if q["index"] % 20 == 0]
    if args.quick:
        train_qs, held = train_qs[:args.quick], held[:max(50, args.quick // 5)]
    negatives = retrieved_negatives(even, texts, 1)
    t0 = time.perf_counter()
    rows = _candidates_cached(WEIGHTS, train_qs, texts, negatives, "train")
    held_rows = _candidates_cached(WEIGHTS, held, texts, negatives, "held")
    print(f"{len(rows)} training spans ({sum(r['label'] for r in rows):.0f} right) read in "
          f"{(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    base = load_base(resolve_embedding(READER_BASE, Settings.from_env()).path)
    tokenizer = Reader(base, WEIGHTS).tokenizer
    items = [(verify_row(tokenizer, r["question"], r["span"], r["sentence"]), r["label"])
             for r in rows]
    model = ReaderModel(base, rank=args.rank, train=True)
    model.load(load_adapter(WEIGHTS))  # from the reader: it already reads questions
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(items) / args.batch)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    t_start, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        for group in batches(items, args.batch, rng):
            ids, mask = _pad([items[i][0] for i in group])
            label = torch.tensor([items[i][1] for i in group])
            s_logit, _ = model(ids, mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(s_logit[:, 0], label)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 25 == 0 or step == steps:
                el = time.perf_counter() - t_start
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                      f"{el / 60:.1f} min, {step * args.batch / el:.1f} ex/s", file=sys.stderr,
                      flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_adapter(model, out, {"rank": args.rank, "seed": args.seed, "epochs": epoch + 1,
                                  "lr": args.lr, "batch": args.batch, "spans": len(items),
                                  "questions": len(train_qs), "init": WEIGHTS.name})
    train_s = time.perf_counter() - t_start
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    (out.parent / (out.stem + ".sha256")).write_text(f"{digest}  {out.name}\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {train_s / 60:.1f} min",
          file=sys.stderr)
    res = {"questions": len(train_qs), "spans": len(items),
           "right": int(sum(r["label"] for r in rows)), "minutes": round(train_s / 60, 1),
           "cpu": _cpu(), "threads": args.threads, "sha256": digest,
           **{k: getattr(args, k) for k in ("rank", "epochs", "lr", "batch", "seed")},
           "held_out": evaluate(Reader(base, out), held_rows)}
    print(json.dumps(res, indent=2))
    if out.resolve() == VERIFIER.resolve() and not args.quick:
        results = _load_results()
        results["verifier"] = res
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    from rag.reader import VERIFIER

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default=str(VERIFIER))
    p.add_argument("--quick", type=int, default=0, help="train on this many questions only")
    train(p.parse_args())


if __name__ == "__main__":
    main()
