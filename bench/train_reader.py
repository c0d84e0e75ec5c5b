"""Trains the reader (rag.reader): LoRA adapters and a start/end head on the all-MiniLM-L6-v2
encoder rag already embeds with, learned from SQuAD v1.1 dev *even*-numbered questions only
(the odd ones are kept for acceptance), with hard negatives: the question paired with passages
retrieval ranks high that do not hold its answer, and windows of its own paragraph that do not,
labelled "no answer here" ([CLS]).

    .venv/bin/python bench/train_reader.py            # `make train`
    .venv/bin/python bench/train_reader.py --quick    # a few minutes, to try a change

Every twentieth question (index % 20 == 0) is held out of training: the reader's answerability
margin is calibrated on them (bench/results_reader.json), never on odd ones. The artifact goes
to rag/weights/reader.safetensors with its checksum in rag/weights/reader.sha256.
The data is read from ../shared/data/squad and never copied into the repository."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.machine import cpu_name  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.reader import CLS, SEP, checksum  # noqa: E402
from rag.reading import fold  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
WORK = ROOT / "bench" / "work" / "reader"
OUT = ROOT / "rag" / "weights" / "reader.safetensors"
RESULTS = ROOT / "bench" / "results_reader.json"


def squad():
    """SQuAD dev's paragraphs by id, and its questions with their answers' offsets."""
    from bench.squad import load_squad

    paragraphs, questions = load_squad()
    return dict(paragraphs), questions


def retrieved_negatives(questions, texts: dict, per_question: int) -> dict[int, list[str]]:
    """For each question, passages rag's own retrieval ranks high that hold none of its answers
    (cached in bench/work/reader/negatives.json: the retrieval is deterministic)."""
    def negatives(retriever, q) -> list[str]:
        return [h.chunk.text for h in retriever.search(q["question"], 8)
                if not _holds_answer(h.chunk.text, q["answers"])][:per_question]

    return _retrieved("negatives.json", questions, texts, negatives)


def _holds_answer(text: str, answers) -> bool:
    """Whether one of `answers` stands anywhere in `text`, case and punctuation folded: looser
    than a whole-word match, so a passage said to hold none holds none."""
    folded = fold(text)
    return any(fold(a) in folded for a in answers)


def _retrieved(name: str, questions, texts: dict, passages) -> dict[int, list[str]]:
    """`passages(retriever, question)` for each question, over rag's hybrid retrieval of SQuAD
    dev, cached in bench/work/reader/`name` (the retrieval is deterministic)."""
    cache = WORK / name
    if cache.exists():
        got = json.loads(cache.read_text())
        if all(str(q["index"]) in got for q in questions):
            return {int(k): v for k, v in got.items()}
    from bench.squad import WORK as SQUAD_WORK
    from bench.squad import prepare
    from rag.retrieve import Retriever
    from rag.store import open_store

    settings = Settings.from_env(index_dir=SQUAD_WORK / "index")
    prepare(settings, sorted(texts.items()))
    store, embedder = open_store(settings)
    retriever = Retriever(store, embedder, "hybrid")
    out = {q["index"]: passages(retriever, q) for q in questions}
    store.close()
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({str(k): v for k, v in out.items()}))
    return out


def examples(tokenizer, questions, texts, negatives, max_len: int, rng: random.Random):
    """(input ids, start, end) triples: the question, then a window of a passage; start = end
    = 0 ([CLS]) when the window holds no answer."""
    out = []
    for q in questions:
        q_ids = tokenizer.encode(q["question"], add_special_tokens=False).ids[:64]
        budget = max_len - len(q_ids) - 3
        ctx = texts[q["doc"]]
        enc = tokenizer.encode(ctx, add_special_tokens=False)
        a0 = q["starts"][0]
        a1 = a0 + len(q["answers"][0])
        offs = enc.offsets
        toks = [i for i, (s, e) in enumerate(offs) if e > a0 and s < a1]
        if not toks:
            continue
        t0, t1 = toks[0], toks[-1]
        n = len(enc.ids)
        if n <= budget:
            lo = 0
        else:  # a window holding the answer, placed at random around it
            lo = rng.randint(max(0, t1 - budget + 1), min(t0, n - budget))
        window = enc.ids[lo:lo + budget]
        out.append((_pair(q_ids, window), len(q_ids) + 2 + t0 - lo, len(q_ids) + 2 + t1 - lo))
        if n > budget + 16:  # a window of its own paragraph without the answer
            spans = [s for s in (0, n - budget) if s + budget <= t0 or s > t1]
            if spans:
                s = rng.choice(spans)
                out.append((_pair(q_ids, enc.ids[s:s + budget]), 0, 0))
        for neg in negatives.get(q["index"], []):
            ids = tokenizer.encode(neg, add_special_tokens=False).ids
            if len(ids) > budget:
                s = rng.randint(0, len(ids) - budget)
                ids = ids[s:s + budget]
            out.append((_pair(q_ids, ids), 0, 0))
    return out


def retrieved_passages(questions, texts: dict, k: int) -> dict[int, list[str]]:
    """For each question, the `k` passages rag's own retrieval ranks first for it, answer or
    not (cached in bench/work/reader/retrieved-<k>.json)."""
    return _retrieved(f"retrieved-{k}.json", questions, texts,
                      lambda retriever, q: [h.chunk.text for h in retriever.search(q["question"],
                                                                                   k)])


def _occurrences(text: str, answers, starts=()) -> list[tuple[int, int]]:
    """Character spans of `text` where one of `answers` stands (the given `starts` first, then
    every other place it stands as whole words, case aside)."""
    found = [(s, s + len(a)) for a, s in zip(answers, starts) if text[s:s + len(a)] == a]
    low = text.lower()
    for a in answers:
        a = a.lower().strip()
        at = low.find(a) if a else -1
        while at >= 0:
            whole = not (at > 0 and low[at - 1].isalnum()) and \
                not (at + len(a) < len(low) and low[at + len(a)].isalnum())
            if whole and (at, at + len(a)) not in found:
                found.append((at, at + len(a)))
            at = low.find(a, at + 1)
    return found


def _window(tokenizer, q_ids, text, spans, budget: int, rng: random.Random):
    """A row of the question and a window of `text` (around one of `spans` when it holds any,
    at random otherwise) and the (start, end) token pairs in the row of the spans it holds."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    offs, n = enc.offsets, len(enc.ids)
    tokens = []
    for a0, a1 in spans:
        toks = [i for i, (s, e) in enumerate(offs) if e > a0 and s < a1]
        if toks and toks[-1] - toks[0] < budget:
            tokens.append((toks[0], toks[-1]))
    if n <= budget:
        lo = 0
    elif tokens:
        t0, t1 = rng.choice(tokens)
        lo = rng.randint(max(0, t1 - budget + 1), min(t0, n - budget))
    else:
        lo = rng.randint(0, n - budget)
    first = len(q_ids) + 2
    golds = [(first + t0 - lo, first + t1 - lo) for t0, t1 in tokens
             if t0 >= lo and t1 < lo + budget]
    return _pair(q_ids, enc.ids[lo:lo + budget]), golds


def grouped_examples(tokenizer, questions, texts, retrieved, max_len: int, per_group: int,
                     rng: random.Random, unanswerable: float = 0.0):
    """For shared normalisation: a group a question, of windows of the passages retrieval
    ranks first for it (the last swapped for its own paragraph when none holds an answer),
    each a (row, golds) pair: golds are the (start, end) token pairs where an answer stands,
    none when the window holds no answer. Passages are read as far as the encoder's tokenizer
    reads them (256 tokens; rag's chunks are shorter): a question whose own paragraph holds its
    answer further on is left out, as `examples` leaves it out.

    With `unanswerable`, that share of the questions (drawn by a generator of its own, so the
    other groups stay as they were) is instead grouped with the first `per_group` retrieved
    passages that hold none of its answers: a question the group cannot answer."""
    out = []
    drawn = random.Random(len(questions))
    for q in questions:
        q_ids = tokenizer.encode(q["question"], add_special_tokens=False).ids[:64]
        budget = max_len - len(q_ids) - 3
        if unanswerable and drawn.random() < unanswerable:
            wrong = [t for t in retrieved.get(q["index"], [])
                     if not _holds_answer(t, q["answers"])][:per_group]
            if wrong:
                out.append([_window(tokenizer, q_ids, t, [], budget, rng) for t in wrong])
                continue
        group = [_window(tokenizer, q_ids, text, _occurrences(text, q["answers"]), budget, rng)
                 for text in retrieved.get(q["index"], [])[:per_group]]
        if not any(golds for _, golds in group):
            own = texts[q["doc"]]
            got = _window(tokenizer, q_ids, own, _occurrences(own, q["answers"], q["starts"]),
                          budget, rng)
            if not got[1]:
                continue
            group = [*group[:per_group - 1], got]
        out.append(group)
    return out


def shared_loss(s_logit, e_logit, group_rows, golds, firsts, lengths, null: bool = False):
    """Shared normalisation: each group's start (and end) logits over the passage tokens of all
    its windows as one distribution; the loss is minus the log of the chance it gives the
    places where an answer stands, a place counted once for each accepted answer that stands
    there (SQuAD keeps up to three; where two share a start the loss can fall below zero).

    With `null`, each window's "no answer" place ([CLS]) is in the distribution too, and a
    group that holds no answer has its target there: the reader learns one scale on which an
    answer in any passage beats "no answer" in every passage, and "no answer" beats every span
    of a group that holds none."""
    import torch

    losses = []
    for rows in group_rows:
        answered = any(golds[r] for r in rows)
        for logit, side in ((s_logit, 0), (e_logit, 1)):
            parts, targets, base = [], [], 0
            for r in rows:
                if null:
                    parts.append(logit[r, :1])
                    if not answered:
                        targets.append(base)
                    base += 1
                parts.append(logit[r, firsts[r]:firsts[r] + lengths[r]])
                targets += [base + g[side] - firsts[r] for g in golds[r]]
                base += lengths[r]
            scores = torch.log_softmax(torch.cat(parts).float(), 0)
            losses.append(-torch.logsumexp(scores[torch.tensor(targets)], 0))
    return torch.stack(losses).mean()


def as_typed(question: str, rng: random.Random) -> str:
    """A question as people type it into a terminal: in lower case without its question mark,
    or (as often) only its search words ("year denver broncos win super bowl")."""
    from rag.text import search_words

    if rng.random() < 0.5:
        return question.strip().rstrip("?").strip().lower()
    return " ".join(search_words(question)) or question


def _pair(q_ids: list[int], ctx_ids: list[int]) -> list[int]:
    return [CLS, *q_ids, SEP, *ctx_ids, SEP]


def batches(lengths: list[int], size: int, rng: random.Random):
    """Batches of indices into `lengths`, of like lengths (little padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    groups = [order[s:s + size] for s in range(0, len(order), size)]
    rng.shuffle(groups)
    return groups


def train(args) -> None:
    import torch

    from rag.reader import READER_BASE, ReaderModel, load_adapter, load_base, save_adapter
    from rag.registry import resolve_embedding

    out = Path(args.weights)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    texts, questions = squad()
    even = [q for q in questions if q["index"] % 2 == 0]
    train_qs = [q for q in even if q["index"] % 20 != 0]
    if args.quick:
        train_qs = train_qs[:args.quick]
    if args.typed:  # some questions as people type them: lower case, or its words alone
        typing = random.Random(args.seed + 1)
        train_qs = [{**q, "question": as_typed(q["question"], typing)}
                    if typing.random() < args.typed else q for q in train_qs]
    settings = Settings.from_env()
    base = load_base(resolve_embedding(READER_BASE, settings).path)
    if args.shared:  # a group of windows a question, its logits normalised across them
        # unanswerable groups are read from further down retrieval's list
        retrieved = retrieved_passages(even, texts, args.shared if not args.unanswerable
                                       else 2 * args.shared)
        groups = grouped_examples(base.tokenizer, train_qs, texts, retrieved, args.max_len,
                                  args.shared, rng, args.unanswerable)
    else:  # each window on its own
        negatives = retrieved_negatives(even, texts, args.negatives)
        groups = [[(row, [(s, e)] if s > 0 else [])] for row, s, e in
                  examples(base.tokenizer, train_qs, texts, negatives, args.max_len, rng)]
    items = [w for g in groups for w in g]
    # the options a plain pass leaves off are recorded only when set: its file stays the same
    variant = {k: getattr(args, k) for k in ("shared", "shared_weight", "typed")} \
        if args.shared or args.typed else {}
    if args.unanswerable:
        variant["unanswerable"] = args.unanswerable
    n_pos = sum(1 for _, golds in items if golds)
    print(f"{len(train_qs)} questions -> {len(items)} examples ({n_pos} with the answer) in "
          f"{len(groups)} groups", file=sys.stderr)
    # building a retrieval cache just now ran rag's embedder, which sets torch's threads to the
    # cores it found free: the training runs on the threads asked for, cache or not
    torch.set_num_threads(args.threads)
    model = ReaderModel(base, rank=args.rank, train=True)
    if args.init:  # go on from a trained adapter (a second stage, with its own seed and rate)
        model.load(load_adapter(Path(args.init)))
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in params):,}", file=sys.stderr)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_batch = max(1, args.batch // max(1, args.shared))  # groups a batch
    steps = args.epochs * math.ceil(len(groups) / per_batch)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm)))
    t_start, step, seen = time.perf_counter(), 0, 0
    lengths = [max(len(row) for row, _ in g) for g in groups]
    for epoch in range(args.epochs):
        for batch in batches(lengths, per_batch, rng):
            rows, golds, group_rows = [], [], []
            for i in batch:
                group_rows.append(list(range(len(rows), len(rows) + len(groups[i]))))
                for row, g in groups[i]:
                    rows.append(row)
                    golds.append(g)
            ids, mask = _pad(rows)
            start = torch.tensor([g[0][0] if g else 0 for g in golds])
            end = torch.tensor([g[0][1] if g else 0 for g in golds])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                s_logit, e_logit = model(ids, mask)
            loss = (torch.nn.functional.cross_entropy(s_logit.float(), start)
                    + torch.nn.functional.cross_entropy(e_logit.float(), end)) / 2
            if args.shared:
                firsts = [row.index(SEP) + 1 for row in rows]  # after the question's [SEP]
                passage_lengths = [len(row) - f - 1 for row, f in zip(rows, firsts)]
                # with unanswerable groups, "no answer" is in each group's distribution
                null = args.unanswerable > 0
                targeted = [r for r in group_rows if null or any(golds[i] for i in r)]
                if targeted:
                    loss = loss + args.shared_weight * shared_loss(
                        s_logit, e_logit, targeted, golds, firsts, passage_lengths, null) / 2
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(rows)
            if step % 25 == 0 or step == steps:
                el = time.perf_counter() - t_start
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                      f"{el / 60:.1f} min, {seen / el:.1f} ex/s", file=sys.stderr,
                      flush=True)
        # each epoch's adapter is written as it ends: a stopped run leaves a usable one
        out.parent.mkdir(parents=True, exist_ok=True)
        save_adapter(model, out, {"rank": args.rank, "seed": args.seed,
                                  "max_len": args.max_len, "epochs": epoch + 1, "lr": args.lr,
                                  "batch": args.batch, "questions": len(train_qs),
                                  "examples": len(items), "init": args.init, **variant})
    train_s = time.perf_counter() - t_start
    digest = checksum(out)
    (out.parent / (out.stem + ".sha256")).write_text(f"{digest}  {out.name}\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}…) in "
          f"{train_s / 60:.1f} min", file=sys.stderr)
    results = _load_results()
    # one entry a stage, by the file it wrote
    results.setdefault("train", {})[out.name] = {
        "questions": len(train_qs), "examples": len(items), "with_answer": n_pos,
        "minutes": round(train_s / 60, 1), "cpu": cpu_name(), "threads": args.threads,
        "bf16": args.bf16, "sha256": digest,
        **{k: getattr(args, k) for k in ("rank", "epochs", "lr", "batch", "seed", "max_len",
                                         "negatives", "init")}, **variant}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def calibrate(args) -> None:
    """The reader's calibration, set on the held-out even questions (index % 20 == 0), each
    asked over the five passages rag retrieves for it (answerable) and over the first five
    retrieved passages that hold none of its answers (a question the index cannot answer), and
    on the natural calibration set (bench/calibration/: questions as people type them over the
    Python documentation, each asked as `rag ask` asks it):

    - answerability: a logistic model over rag.reading.FEATURES whose target is "the best span
      is right" (SQuAD: F1 >= 0.5, never so over wrong passages; the natural set: the span holds
      an accepted answer, never so for an unanswerable question), the two sources weighed
      equally; its threshold is the lowest chance at which at most `--wrong-rate` of the SQuAD
      questions asked over wrong passages are answered (with `--natural-bars`, also at most
      `--wrong-rate` of the natural set's unanswerable questions, and at most
      `--natural-wrong` of its answerable ones answered wrongly);
    - answer_margin: the SQuAD rule on the reader's margin alone (the model's fallback, and the
      comparison for it);
    - support_margin: the lowest margin, read in the cited sentence alone, that a fraction
      `--keep` of the held-out answers whose span is right still reach.

    `--weights W1,W2` calibrates the adapters read as an ensemble; `--typed-squad` fits on the
    held-out questions as people type them too.

    Writes rag/weights/reader.json and the numbers behind it to bench/results_reader.json."""
    import numpy as np

    from rag.reading import FEATURES

    weights = tuple(Path(w) for w in args.weights.split(","))  # two or more: an ensemble
    squad_rows = _squad_rows(weights, args.quick)
    x, y, kind = (np.array(squad_rows[k]) for k in ("rows", "labels", "kinds"))
    gold_f1, f1_top5, sentence = (squad_rows[k] for k in ("gold_f1", "f1_top5", "sentence"))
    natural = np.zeros(len(y), dtype=bool)
    typed = np.zeros(len(y), dtype=bool)
    source = np.full(len(y), "squad", dtype=object)

    def join(rows: dict, name: str, is_natural: bool = False, is_typed: bool = False) -> None:
        """Another source's rows after SQuAD's, marked as what they are."""
        nonlocal x, y, kind, natural, typed, source
        n = len(rows["labels"])
        x = np.concatenate([x, np.array(rows["rows"])])
        y = np.concatenate([y, np.array(rows["labels"])])
        kind = np.concatenate([kind, np.array(rows["kinds"])])
        natural = np.concatenate([natural, np.full(n, is_natural)])
        typed = np.concatenate([typed, np.full(n, is_typed)])
        source = np.concatenate([source, np.full(n, name, dtype=object)])

    for folder in filter(None, args.natural.split(",")):
        join(_natural_rows(weights, Path(folder)), Path(folder).name, is_natural=True)
    if args.typed_squad:  # the same questions as people type them, in SQuAD's half of the fit
        join(_squad_rows(weights, args.quick, typed=True), "squad-typed", is_typed=True)
    held = squad_rows["questions"]
    t_read = squad_rows["read_s"]
    squad = ~natural & ~typed
    margin = x[:, FEATURES.index("margin")]
    # each source weighs as much in the fit as the other, however many rows it has
    weight = np.where(natural, 1 / max(1, natural.sum()), 1 / squad.sum())
    if typed.any():
        weight = np.where(typed, 0.5 / typed.sum(), np.where(squad, 0.5 / squad.sum(), weight))
    model, chance = _fit_answerability(x, y, args.seed, weight)
    # chance: held-out-fold chances, what the threshold and the tables read
    threshold = _threshold(chance[squad & (kind == 0)], args.wrong_rate)
    if natural.any() and args.natural_bars:
        wrong = chance[natural & (kind == 1) & (y == 0)]  # answerable, its best span wrong
        allowed = args.natural_wrong * (natural & (kind == 1)).sum()  # of all answerable
        threshold = max(threshold,
                        _threshold(chance[natural & (kind == 0)], args.wrong_rate),
                        _threshold(wrong, allowed / max(1, len(wrong))))
    answer_margin = round(_threshold(margin[squad & (kind == 0)], args.wrong_rate), 3)
    sentence_sorted = sorted(sentence)
    support_margin = round(float(sentence_sorted[int(len(sentence_sorted) * (1 - args.keep))]),
                           3)
    pos_f1 = np.array(f1_top5)

    def policy(score, cut):
        score = score[squad]
        ans = score[kind[squad] == 1] >= cut
        return {"answerable_answered": round(float(ans.mean()), 3),
                "wrong_passages_answered": round(float((score[kind[squad] == 0] >= cut).mean()),
                                                 3),
                "top5_F1_with_abstention": round(float(100 * (pos_f1 * ans).mean()), 2),
                "answered_right_of_answered": round(
                    float((pos_f1[ans] >= 0.5).mean()) if ans.any() else 0.0, 3)}

    def natural_policy(cut, within=natural):
        answerable, unanswerable = within & (kind == 1), within & (kind == 0)
        ans = chance >= cut
        return {"answerable_right": round(float((ans & answerable & (y == 1)).sum()
                                                / answerable.sum()), 3),
                "answerable_wrong": round(float((ans & answerable & (y == 0)).sum()
                                                / answerable.sum()), 3),
                "unanswerable_answered": round(float((ans & unanswerable).sum()
                                                     / max(1, unanswerable.sum())), 3)}

    res = {"held_out_questions": held, "cpu": cpu_name(),
           "gold_paragraph_F1": round(100 * sum(gold_f1) / held, 2),
           "top5_F1_always_answering": round(100 * float(pos_f1.mean()), 2),
           "auc_margin": round(auc(margin[squad & (kind == 1)], margin[squad & (kind == 0)]),
                               3),
           "auc_answerability_cv": round(auc(chance[squad & (kind == 1)],
                                             chance[squad & (kind == 0)]), 3),
           "by_margin": {"answer_margin": answer_margin, **policy(margin, answer_margin)},
           "by_answerability": {"threshold": round(threshold, 4),
                                **policy(chance, threshold)},
           "support_margin": support_margin,
           "right_spans_supported_by_sentence": round(
               sum(m >= support_margin for m in sentence) / max(1, len(sentence)), 3),
           "read_ms_per_question_top5": round(1000 * t_read / held, 1),
           "answerability_table": {str(t): policy(chance, t)
                                   for t in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)},
           "wrong_rate": args.wrong_rate, "keep": args.keep}
    if typed.any():
        at = chance >= threshold
        res["squad_typed"] = {
            "auc_answerability_cv": round(auc(chance[typed & (kind == 1)],
                                              chance[typed & (kind == 0)]), 3),
            "answerable_answered": round(float(at[typed & (kind == 1)].mean()), 3),
            "right_of_answerable": round(float((at & (y == 1))[typed & (kind == 1)].mean()), 3),
            "wrong_passages_answered": round(float(at[typed & (kind == 0)].mean()), 3)}
    if natural.any():
        right = natural & (y == 1)
        res["natural"] = {
            "questions": int(natural.sum()), "answerable": int((natural & (kind == 1)).sum()),
            "best_span_right": int(right.sum()), "natural_wrong": args.natural_wrong,
            "auc_right_span_cv": round(auc(chance[right], chance[natural & ~right]), 3),
            "at_threshold": natural_policy(threshold),
            "by_set": {name: natural_policy(threshold, source == name)
                       for name in dict.fromkeys(source[natural])},
            "table": {str(t): natural_policy(t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}}
    print(json.dumps(res, indent=2))
    if args.quick:
        return
    # beside its (first) adapter: rag/weights/reader.json for the shipped one
    digests = [checksum(w) for w in weights]
    weights[0].with_suffix(".json").write_text(json.dumps({
            "answer_margin": answer_margin, "support_margin": support_margin,
            "answerability": {**model, "threshold": round(threshold, 4)},
            "weights_sha256": digests[0] if len(digests) == 1 else digests},
            indent=2) + "\n")
    if weights[0].resolve() == OUT.resolve():
        results = _load_results()
        results["calibration"] = res
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def _squad_rows(weights: tuple[Path, ...], quick: int, typed: bool = False) -> dict:
    """The held-out even questions (index % 20 == 0) read by the reader in `weights`: each over
    the five passages rag retrieves for it and over the first five retrieved passages that hold
    none of its answers (`typed`: each asked as people type it, `as_typed`, searched and read
    so). Cached in bench/work/reader/ by the weights' checksum: reading them takes a quarter of
    an hour."""
    from bench.squad import WORK as SQUAD_WORK
    from bench.squad import prepare
    from rag.evaluate import token_f1
    from rag.reader import Reader
    from rag.reading import FEATURES, read_passages
    from rag.retrieve import Retriever
    from rag.store import open_store

    digest = checksum(weights)
    cache = WORK / f"calibration-squad{'-typed' if typed else ''}-{digest[:16]}-{quick}.json"
    if cache.exists():
        got = json.loads(cache.read_text())
        if got.get("features") == list(FEATURES):
            return got
    texts, questions = squad()
    held = [q for q in questions if q["index"] % 2 == 0 and q["index"] % 20 == 0]
    if quick:
        held = held[:quick]
    settings = Settings.from_env(index_dir=SQUAD_WORK / "index")
    prepare(settings, sorted(texts.items()))
    store, embedder = open_store(settings)
    retriever = Retriever(store, embedder, "hybrid")
    reader = Reader(embedder.minilm(), weights)
    out: dict = {"features": list(FEATURES), "questions": len(held), "rows": [], "labels": [],
                 "kinds": [], "gold_f1": [], "f1_top5": [], "sentence": [], "read_s": 0.0}
    for n, q in enumerate(held, 1):
        if n % 50 == 0:
            print(f"{n}/{len(held)} questions read", file=sys.stderr, flush=True)
        gold = tuple(q["answers"])
        asked = as_typed(q["question"], random.Random(q["index"])) if typed else q["question"]
        hits = retriever.search(asked, 12)
        t0 = time.perf_counter()
        got = read_passages(reader, asked, hits[:5])
        out["read_s"] += time.perf_counter() - t0
        best, support = got.best, got.support
        text = hits[best.passage].chunk.text
        f1 = token_f1(text[best.start:best.end], gold)
        out["f1_top5"].append(f1)
        out["rows"].append([got.features[f] for f in FEATURES])
        out["labels"].append(float(f1 >= 0.5))
        out["kinds"].append(1)  # asked over its retrieved passages; 0: over wrong ones
        if f1 >= 0.5:
            out["sentence"].append(-99.0 if support is None else support)
        g = reader.read(asked, [texts[q["doc"]]])[0]
        out["gold_f1"].append(token_f1(texts[q["doc"]][g[0].start:g[0].end], gold) if g else 0.0)
        negs = [h for h in hits if not _holds_answer(h.chunk.text, gold)][:5]
        if negs:
            out["rows"].append([read_passages(reader, asked, negs).features[f]
                                for f in FEATURES])
            out["labels"].append(0.0)
            out["kinds"].append(0)
    store.close()
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def _natural_rows(weights: tuple[Path, ...], folder: Path) -> dict:
    """A natural-question set (questions.jsonl; its documents fetched to
    bench/work/<folder name>/docs) read as `rag ask` reads it: each question over the passages
    rag retrieves for it. Requests, yes/no questions and follow-ups are left out (they are not
    answered by a span). Label: the best span holds an accepted answer; kind: 1 answerable,
    0 not."""
    from bench.natural import indexed
    from rag.answer import Answerer
    from rag.display import fit_question
    from rag.evaluate import contains_answer
    from rag.reader import READER_BASE, Reader, load_base
    from rag.reading import FEATURES, read_passages
    from rag.registry import resolve_embedding

    settings = indexed(folder)
    answerer = Answerer(settings)
    reader = Reader(load_base(resolve_embedding(READER_BASE, settings).path), weights)
    out: dict = {"rows": [], "labels": [], "kinds": []}
    for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line) if line.strip() else None
        if item is None or item["kind"] in ("instruction", "yesno") or item.get("follows"):
            continue
        question = fit_question(item["question"].strip())
        hits = answerer.retrieve(question)
        got = read_passages(reader, question, hits)
        if got is None:
            continue
        span = hits[got.best.passage].chunk.text[got.best.start:got.best.end]
        out["rows"].append([got.features[f] for f in FEATURES])
        out["labels"].append(float(not item["unanswerable"]
                                   and contains_answer(span, tuple(item["answers"]))))
        out["kinds"].append(0 if item["unanswerable"] else 1)
    answerer.close()
    return out


def _fit_answerability(x, y, seed: int, weight=None, folds: int = 5):
    """The logistic model on standardised features (L2-regularised, by L-BFGS; each row's loss
    times its `weight` over the mean weight, 1 by default), and each row's chance from a model
    fitted without its fold."""
    import numpy as np
    import torch

    from rag.reading import FEATURES

    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)

    def fit(xs, ys, ws):
        mean, scale = xs.mean(0), xs.std(0) + 1e-6
        xt = torch.tensor((xs - mean) / scale, dtype=torch.float64)
        yt = torch.tensor(ys, dtype=torch.float64)
        wt = torch.tensor(ws / ws.mean(), dtype=torch.float64)
        w = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, wt) \
                + 1e-3 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return mean, scale, w.detach().numpy(), float(b.detach())

    def apply(m, xs):
        mean, scale, w, b = m
        return 1 / (1 + np.exp(-(((xs - mean) / scale) @ w + b)))

    order = np.random.default_rng(seed).permutation(len(y))
    chance = np.zeros(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        chance[test] = apply(fit(x[train], y[train], weight[train]), x[test])
    mean, scale, w, b = fit(x, y, weight)
    model = {"features": list(FEATURES), "mean": [round(float(v), 6) for v in mean],
             "scale": [round(float(v), 6) for v in scale],
             "weights": [round(float(v), 6) for v in w], "bias": round(b, 6)}
    return model, chance


def _threshold(negative_scores, wrong_rate: float) -> float:
    """The lowest score at which at most `wrong_rate` of `negative_scores` reach it."""
    ordered = sorted(float(v) for v in negative_scores)
    if not ordered:
        return 0.0
    cut = min(int(len(ordered) * (1 - wrong_rate)), len(ordered) - 1)
    return ordered[cut] + 1e-9


def auc(pos, neg) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    import numpy as np

    pos, neg = np.asarray(pos), np.asarray(neg)
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :])
                  .sum()) / (len(pos) * len(neg)))


def _pad(seqs):
    import torch

    n, length = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = True
    return ids, mask


def _load_results() -> dict:
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", choices=["train", "calibrate"], default="train")
    p.add_argument("--wrong-rate", type=float, default=0.10)
    p.add_argument("--keep", type=float, default=0.90)
    p.add_argument("--natural", default=str(ROOT / "bench" / "calibration"),
                   help="natural-question sets to calibrate on too, their folders "
                        "separated by commas ('' for SQuAD alone)")
    p.add_argument("--natural-bars", action="store_true",
                   help="the threshold also holds the natural set's bars (--wrong-rate of its "
                        "unanswerable questions answered, --natural-wrong of its answerable "
                        "ones answered wrongly)")
    p.add_argument("--natural-wrong", type=float, default=0.05)
    p.add_argument("--typed-squad", action="store_true",
                   help="calibrate: fit on the held-out SQuAD questions as people type them "
                        "too (half of SQuAD's weight)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=192)
    p.add_argument("--negatives", type=int, default=1, help="retrieved negatives a question")
    p.add_argument("--shared", type=int, default=0,
                   help="train on groups of this many retrieved passages a question, their "
                        "logits normalised across the group (0: each window on its own)")
    p.add_argument("--shared-weight", type=float, default=1.0)
    p.add_argument("--unanswerable", type=float, default=0.0,
                   help="with --shared: this share of the questions grouped with retrieved "
                        "passages that hold no answer, \"no answer\" in every group's scale")
    p.add_argument("--typed", type=float, default=0.0,
                   help="the fraction of training questions rewritten as people type them")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (where native)")
    p.add_argument("--init", default="", help="an adapter to go on training from")
    p.add_argument("--weights", default=str(OUT),
                   help="the adapter: written by train, read by calibrate (calibrate: "
                        "several, separated by commas, read as an ensemble)")
    p.add_argument("--quick", type=int, default=0, help="train on this many questions only")
    args = p.parse_args()
    if args.unanswerable and not args.shared:
        p.error("--unanswerable groups questions: it needs --shared")
    (calibrate if args.what == "calibrate" else train)(args)


if __name__ == "__main__":
    main()
