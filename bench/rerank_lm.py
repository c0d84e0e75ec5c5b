"""Zero-shot re-ranking by query likelihood (UPR, Sachan et al. 2022) on SQuAD v1.1 dev as an
open corpus (bench/squad.py): each candidate paragraph from the hybrid retriever's top 20 is
scored by the mean log-probability of the question's tokens given
"Passage: <paragraph>\\nPlease write a question based on this passage.\\nQuestion:" under a
small bundled LLM, and that score is combined with the retriever's own.

    RAG_THREADS=1 .venv/bin/python bench/rerank_lm.py candidates --split even --n 300
    RAG_THREADS=1 .venv/bin/python bench/rerank_lm.py score --split even --n 100 \\
        --model smollm2 --prompt plain
    .venv/bin/python bench/rerank_lm.py evaluate --split even --n 100 --model smollm2 \\
        --prompt plain

Steps: `candidates` runs the retriever once and caches each question's top-20 hits (so the
numbers do not move while rag/retrieve.py is being edited); `score` computes log p(question
tokens | prompt) for every candidate paragraph (whole paragraph text, from the docs folder)
and caches it with the time taken; `evaluate` reports R@1/R@5/R@10/MRR@10 for the retriever's
own order and for the combinations, over the top 10 and the top 20 paragraphs. Everything
runs on one thread. Caches live in /tmp/rerank_lm/.

Measured (2026-12-02, whole paragraphs, plain prompt, mean log-prob, combined as
(1-w)*z(fused) + w*z(lm) over the retriever's top 10 paragraphs, w=0.4 tuned on even):
gemma3-270m even 100 R@1 0.56 -> 0.65, R@5 0.94 -> 0.96, MRR@10 0.729 -> 0.777; held out, odd
200: R@1 0.705 -> 0.72, R@5 0.945 -> 0.955, MRR@10 0.809 -> 0.824; 6-8 s a question on one
thread (12.7 s for the top 20). smollm2 (even 40): weaker than gemma and slower
(LM alone below the retriever, R@1 0.425 -> 0.45). Not worth it at rag ask's 3 s budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAG_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from squad import WORK, doc_of, load_squad, split  # noqa: E402

CACHE = Path("/tmp/rerank_lm")
TOP = 20
INSTRUCTION = "Please write a question based on this passage."


# ---------------------------------------------------------------- candidates (the retriever)

def candidates(which: str, n: int) -> Path:
    from rag.config import Settings
    from rag.ingest import open_store
    from rag.retrieve import Retriever

    settings = Settings.from_env().with_(index_dir=WORK / "index")
    paragraphs, questions = load_squad()
    qs = split(questions, which, n)
    store, embedder = open_store(settings)
    r = Retriever(store, embedder, "hybrid", "zscore")
    rows = []
    t0 = time.perf_counter()
    for q in qs:
        hits = r.search(q["question"], k=TOP)
        docs: dict[str, dict] = {}
        for h in hits:  # by paragraph: a paragraph's score is its best chunk's
            d = doc_of(h.chunk.source)
            if d not in docs:
                docs[d] = {"doc": d, "score": h.score, "chunks": []}
            docs[d]["chunks"].append(h.chunk.text)
        rows.append({"index": q["index"], "question": q["question"], "gold": q["doc"],
                     "cands": list(docs.values())})
    dt = time.perf_counter() - t0
    store.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"cands_{which}_{n}.json"
    src = (ROOT / "rag" / "retrieve.py").read_bytes()
    import hashlib
    out.write_text(json.dumps({"retrieve_py_sha1": hashlib.sha1(src).hexdigest(),
                               "ms_per_query": round(1000 * dt / len(qs), 2), "rows": rows}))
    print(f"wrote {out}: {len(rows)} questions, {1000 * dt / len(qs):.1f} ms a search")
    return out


def load_cands(which: str, n: int) -> list[dict]:
    """The cached candidates of the first n questions of a split (from any larger cache)."""
    files = sorted(CACHE.glob(f"cands_{which}_*.json"),
                   key=lambda p: int(p.stem.split("_")[-1]))
    for f in files:
        if int(f.stem.split("_")[-1]) >= n:
            return json.loads(f.read_text())["rows"][:n]
    raise SystemExit(f"no candidates cached for {which} {n}: run `candidates` first")


# ---------------------------------------------------------------- the LM scorer

def model_path(name: str) -> str:
    if name.endswith(".gguf"):
        return name
    from rag.config import Settings
    from rag.registry import resolve_llm

    return str(resolve_llm(name, Settings.from_env()).path)


def load_llama(path: str, n_ctx: int, threads: int, logits_all: bool):
    """As rag.llm loads models: with llama.cpp's AMX "extra" buffers off where they crash it
    (this machine's Xeon: a segmentation fault in the first decode otherwise)."""
    import llama_cpp

    from rag.llm import filter_llama_logs, flash_attention_pays, load_fields, model_defaults

    filter_llama_logs()
    with model_defaults(**load_fields()):
        return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, n_batch=512, seed=0,
                               flash_attn=flash_attention_pays(), logits_all=logits_all,
                               verbose=False)


class QueryLikelihood:
    """log p(question tokens | prompt) by one llama.cpp decode per passage, with logits asked
    for only at the positions that predict the question's tokens."""

    def __init__(self, path: str, prompt: str, n_ctx: int = 1024, threads: int = 1):
        import llama_cpp

        self.lc = llama_cpp
        self.llm = load_llama(path, n_ctx, threads, logits_all=False)
        self.n_ctx = n_ctx
        self.prompt = prompt
        self.n_vocab = self.llm.n_vocab()
        self.template = None
        if prompt == "chat":
            import jinja2

            src = self.llm.metadata.get("tokenizer.chat_template")
            if not src:
                raise SystemExit("this model has no chat template")
            self.template = jinja2.Environment().from_string(src)

    def _prefix(self, passage: str) -> tuple[str, str]:
        """(prompt text, what goes before the question's first word)."""
        if self.prompt == "plain":
            return f"Passage: {passage}\n{INSTRUCTION}\nQuestion:", " "
        if self.prompt == "chat":
            msgs = [{"role": "user", "content": f"Passage: {passage}\n{INSTRUCTION}"}]
            text = self.template.render(messages=msgs, add_generation_prompt=True,
                                        bos_token="", eos_token="")
            return text, ""
        raise ValueError(self.prompt)

    def tokens(self, passage: str, question: str) -> tuple[list[int], int]:
        prefix, sep = self._prefix(passage)
        special = self.prompt == "chat"
        p = self.llm.tokenize(prefix.encode(), add_bos=True, special=special)
        q = self.llm.tokenize((sep + question).encode(), add_bos=False, special=False)
        room = self.n_ctx - len(q) - 1
        if len(p) > room:  # cut the passage, keep the instruction: rare on SQuAD
            tail = self.llm.tokenize(prefix[prefix.rfind("\n" + INSTRUCTION):].encode()
                                     if self.prompt == "plain" else
                                     prefix[prefix.rfind(INSTRUCTION):].encode(),
                                     add_bos=False, special=special)
            p = p[:room - len(tail)] + tail
        return p + q, len(p)

    def logprobs(self, passage: str, question: str) -> list[float]:
        toks, n_p = self.tokens(passage, question)
        llm = self.llm
        llm.reset()
        llm._ctx.kv_cache_clear()
        batch = llm._batch
        b = batch.batch
        out = []
        for start in range(0, len(toks), llm.n_batch):  # the batch holds n_batch tokens
            part = toks[start:start + llm.n_batch]
            batch.set_batch(batch=part, n_past=start, logits_all=False)
            for i in range(len(part)):
                b.logits[i] = start + i >= n_p - 1 and start + i < len(toks) - 1
            b.logits[len(part) - 1] = True  # llama.cpp wants the last one (unused if after q)
            llm._ctx.decode(batch)
            for i in range(len(part)):
                pos = start + i
                if pos < n_p - 1 or pos >= len(toks) - 1:
                    continue
                row = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(llm._ctx.ctx, i),
                                            shape=(self.n_vocab,)).astype(np.float64)
                m = row.max()
                lse = m + np.log(np.exp(row - m).sum())
                out.append(float(row[toks[pos + 1]] - lse))
        return out


def check_against_logits_all(path: str, prompt: str, passage: str, question: str) -> float:
    """The largest difference from the plain llama_cpp way (logits_all, llm.eval, llm.scores)."""

    ql = QueryLikelihood(path, prompt)
    mine = ql.logprobs(passage, question)
    toks, n_p = ql.tokens(passage, question)
    ref = load_llama(path, 1024, 1, logits_all=True)
    ref.reset()
    ref.eval(toks)
    scores = np.asarray(ref.scores[:len(toks)], dtype=np.float64)
    lse = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
    theirs = [scores[i, toks[i + 1]] - lse[i] for i in range(n_p - 1, len(toks) - 1)]
    return float(np.max(np.abs(np.array(mine) - np.array(theirs))))


def score(which: str, n: int, model: str, prompt: str, text: str, top: int = TOP) -> Path:
    rows = load_cands(which, n)
    paragraphs = dict(load_squad()[0])
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"{model}_{prompt}_{text}"
    out = CACHE / f"lm_{which}_{tag}.jsonl"
    done = set()
    if out.exists():
        done = {json.loads(line)["index"] for line in out.read_text().splitlines() if line}
    ql = QueryLikelihood(model_path(model), prompt)
    todo = [r for r in rows if r["index"] not in done]
    t_all = time.perf_counter()
    with out.open("a") as f:
        for j, r in enumerate(todo):
            per = []
            for c in r["cands"][:top]:
                passage = paragraphs[c["doc"]] if text == "para" else " ".join(c["chunks"])
                t0 = time.perf_counter()
                lp = ql.logprobs(passage, r["question"])
                per.append({"doc": c["doc"], "lp": lp,
                            "n_tokens": len(ql.tokens(passage, r["question"])[0]),
                            "s": time.perf_counter() - t0})
            f.write(json.dumps({"index": r["index"], "lm": per}) + "\n")
            f.flush()
            if (j + 1) % 10 == 0:
                el = time.perf_counter() - t_all
                print(f"{j + 1}/{len(todo)} {el / (j + 1):.2f} s a question", flush=True)
    return out


# ---------------------------------------------------------------- evaluation

def zs(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)


def combine(ret: np.ndarray, lm: np.ndarray, how: str, w: float) -> np.ndarray:
    """Higher is better. ret: the retriever's fused scores (in its order), lm: mean logprob."""
    if how == "z":
        return (1 - w) * zs(ret) + w * zs(lm)
    if how == "rank":  # reciprocal ranks, as RRF with k=60... here by rank position
        r_ret = np.arange(1, len(ret) + 1)
        r_lm = np.empty(len(lm))
        r_lm[np.argsort(-lm, kind="stable")] = np.arange(1, len(lm) + 1)
        return -((1 - w) * r_ret + w * r_lm)
    if how == "rrf":
        r_ret = np.arange(1, len(ret) + 1)
        r_lm = np.empty(len(lm))
        r_lm[np.argsort(-lm, kind="stable")] = np.arange(1, len(lm) + 1)
        return (1 - w) / (60 + r_ret) + w / (60 + r_lm)
    raise ValueError(how)


def metrics(ranks: list[int | None], ks=(1, 5, 10)) -> dict:
    res = {f"R@{k}": round(sum(1 for x in ranks if x and x <= k) / len(ranks), 4) for k in ks}
    res["MRR@10"] = round(sum(1 / x for x in ranks if x and x <= 10) / len(ranks), 4)
    return res


def ranks_for(rows, lm_by_q, how, w, top, agg="mean"):
    ranks = []
    for r in rows:
        cands = r["cands"]
        docs = [c["doc"] for c in cands]
        head = cands[:top]
        if w > 0 and len(head) > 1:
            lm = lm_by_q[r["index"]]
            lmv = np.array([(np.mean(lm[c["doc"]]) if agg == "mean" else np.sum(lm[c["doc"]]))
                            for c in head])
            ret = np.array([c["score"] for c in head])
            s = combine(ret, lmv, how, w)
            order = sorted(range(len(head)), key=lambda i: (-s[i], i))
            docs = [head[i]["doc"] for i in order] + docs[top:]
        ranks.append(docs.index(r["gold"]) + 1 if r["gold"] in docs else None)
    return ranks


def evaluate(which: str, n: int, model: str, prompt: str, text: str, fixed: str | None) -> dict:
    rows = load_cands(which, n)
    f = CACHE / f"lm_{which}_{model}_{prompt}_{text}.jsonl"
    lm_rows = {}
    for line in f.read_text().splitlines():
        d = json.loads(line)
        lm_rows[d["index"]] = d["lm"]
    rows = [r for r in rows if r["index"] in lm_rows]
    lm_by_q = {i: {c["doc"]: c["lp"] for c in per} for i, per in lm_rows.items()}
    tops = [t for t in (10, 20) if all(len(lm_rows[r["index"]]) >= min(t, len(r["cands"]))
                                       for r in rows)]
    secs = {top: float(np.mean([sum(c["s"] for c in lm_rows[r["index"]][:top]) for r in rows]))
            for top in tops}
    toks = float(np.mean([c["n_tokens"] for r in rows for c in lm_rows[r["index"]]]))
    res = {"split": which, "n": len(rows), "model": model, "prompt": prompt, "passage": text,
           "baseline": metrics(ranks_for(rows, lm_by_q, "z", 0.0, TOP)),
           **{f"lm_only_top{t}": metrics(ranks_for(rows, lm_by_q, "z", 1.0, t)) for t in tops},
           "seconds_per_question": {f"top{k}": round(v, 2) for k, v in secs.items()},
           "tokens_per_passage": round(toks, 1), "grid": {}}
    grid = [(how, w) for how in ("z", "rank", "rrf")
            for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    if fixed:
        how, w = fixed.split(":")
        grid = [(how, float(w))]
    for top in tops:
        for how, w in grid:
            res["grid"][f"top{top} {how} w={w}"] = metrics(ranks_for(rows, lm_by_q, how, w, top))
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["candidates", "check", "score", "evaluate"])
    p.add_argument("--split", choices=["even", "odd"], default="even")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a .gguf path")
    p.add_argument("--prompt", choices=["plain", "chat"], default="plain")
    p.add_argument("--passage", choices=["para", "chunks"], default="para",
                   help="score the whole paragraph, or only its chunks among the hits")
    p.add_argument("--top", type=int, default=TOP, help="score only the first TOP paragraphs")
    p.add_argument("--fixed", default=None, help="evaluate one combination only, e.g. z:0.3")
    args = p.parse_args()
    if args.what == "candidates":
        candidates(args.split, args.n)
    elif args.what == "check":
        rows = load_cands(args.split, 1)
        para = dict(load_squad()[0])[rows[0]["gold"]]
        print("max |diff| vs logits_all:",
              check_against_logits_all(model_path(args.model), args.prompt, para,
                                       rows[0]["question"]))
    elif args.what == "score":
        score(args.split, args.n, args.model, args.prompt, args.passage, args.top)
    else:
        print(json.dumps(evaluate(args.split, args.n, args.model, args.prompt, args.passage,
                                  args.fixed), indent=1))


if __name__ == "__main__":
    main()
