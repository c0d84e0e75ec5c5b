"""A learned re-ranker over hand-made features of the top fused candidates (SQuAD v1.1 dev as an
open corpus, bench/squad.py). Even-numbered questions only: the first FIT for fitting, the rest
for validation. Odd-numbered questions are never read.

    RAG_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/ltr.py cache --n 5285
    RAG_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/ltr.py fit

`cache` runs the pipeline up to the fused scores (the same calls as Retriever.search), keeps
the top TOP fused chunks of each question with their texts and list scores, and the current
Retriever.search order (the baseline), in /tmp/ltr/cands_even_<n>.pkl. `fit` computes the
features, fits linear models with numpy (logistic pointwise, and pairwise logistic), reports
R@1/5/10 by paragraph on the validation part, an ablation, the weights and the time a question.

Result (session 9, not adopted): 11 features over the top 30 fused chunks, fitted per question
(softmax over the candidates; pointwise and pairwise logistic fits did worse than today's
order). Validation (2,285 even questions after the first 3,000): R@5 0.968 -> 0.972, R@1
0.858 -> 0.867; 5-fold over all 5,285 even: R@5 0.964 -> 0.969, R@1 0.846 -> 0.859. About
+0.005 R@5, short of the 0.97 the odd questions need from 0.952, for 0.6-0.7 ms a search
(against 0.37 ms for today's sentence test over 20); over the top 20 only, most of the gain
goes (5-fold R@5 0.966).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import math
import os
import pickle
import re
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

CACHE = Path("/tmp/ltr")
TOP = 30
POOL = 50
FIT = 3000


# ------------------------------------------------------------------------------ cache

def build_cache(n: int) -> Path:
    from rag.config import Settings
    from rag.ingest import open_store
    from rag.retrieve import CONTEXT_WEIGHT, Retriever, content_words, fuse

    settings = Settings.from_env().with_(index_dir=WORK / "index")
    _, questions = load_squad()
    qs = split(questions, "even", n)
    assert all(q["index"] % 2 == 0 for q in qs)
    store, embedder = open_store(settings)
    retriever = Retriever(store, embedder, "hybrid", "zscore")
    rows = []
    t0 = time.perf_counter()
    for i, q in enumerate(qs):
        text = q["question"]
        index = store.faiss_index()
        qvec = embedder.embed([text])[0]
        pool = min(POOL, index.ntotal)
        dense = store.nearest(qvec, pool)
        lexical = store.lexical_search(content_words(text), pool, CONTEXT_WEIGHT)
        fused = fuse(dense, lexical, "zscore")
        order = sorted(fused, key=lambda r: (-fused[r], r))[:TOP]
        cv = store.chunks_and_vectors(order)
        dmap, lmap = dict(dense), dict(lexical)
        dz = np.array([s for _, s in dense])
        lz = np.array([s for _, s in lexical])
        cands = []
        for rank, r in enumerate(order):
            chunk, vec = cv[r]
            cands.append({"rowid": r, "doc": doc_of(chunk.source), "source": chunk.source,
                          "text": chunk.text, "start": chunk.start, "end": chunk.end,
                          "fused": fused[r], "rank": rank,
                          "cos": float(vec @ qvec),
                          "dense": dmap.get(r), "lex": lmap.get(r)})
        # the baseline: what Retriever.search returns (the question's vector is memoised)
        hits = retriever.search(text, k=TOP)
        base_docs = []
        for h in hits:
            d = doc_of(h.chunk.source)
            if d not in base_docs:
                base_docs.append(d)
        rows.append({"index": q["index"], "question": text, "gold": q["doc"],
                     "cands": cands, "base_docs": base_docs,
                     "dense_stats": (float(dz.mean()), float(dz.std() or 1.0), float(dz.min())),
                     "lex_stats": ((float(lz.mean()), float(lz.std() or 1.0), float(lz.min()))
                                   if len(lz) else (0.0, 1.0, 0.0))})
        if (i + 1) % 500 == 0:
            print(f"{i + 1} questions, {time.perf_counter() - t0:.0f} s", flush=True)
    store.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"cands_even_{n}.pkl"
    sha = hashlib.sha1((ROOT / "rag" / "retrieve.py").read_bytes()).hexdigest()
    with open(out, "wb") as f:
        pickle.dump({"retrieve_py_sha1": sha, "rows": rows}, f)
    print(f"wrote {out}: {len(rows)} questions, {time.perf_counter() - t0:.0f} s")
    return out


# ------------------------------------------------------------------------------ features

from rag.chunking import split_sentences  # noqa: E402
from rag.retrieve import STOPWORDS, content_words, whole_words  # noqa: E402

_WH = [("percent", re.compile(r"\b(what|which) (percentage|percent|proportion|share|fraction)\b")),
       ("time", re.compile(r"\bwhen\b|\b(what|which|in what) (year|years|date|century|decade|"
                           r"month|day|era|period|time)\b")),
       ("duration", re.compile(r"\bhow (long|old)\b")),
       ("number", re.compile(r"\bhow (many|much|large|big|far|high|tall|fast|often)\b")),
       ("person", re.compile(r"\bwho(m|se)?\b")),
       ("place", re.compile(r"\bwhere\b|\b(what|which) (city|country|state|place|region|town|"
                            r"location|continent|county|province|river|area)\b"))]
TYPES = [t for t, _ in _WH]
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december")
_NUMWORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
             "fifteen|twenty|thirty|forty|fifty|hundred|hundreds|thousand|thousands|million|"
             "millions|billion|billions|dozen|dozens|several|half|single|double|triple")
_UNITS = ("years?|months?|weeks?|days?|hours?|minutes?|seconds?|decades?|centuries|century|"
          "millennia|nights?")
_TYPE_RE = {
    "time": re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b(" + _MONTHS + r")\b|\bcentur(y|ies)\b"
                       r"|\b\d{1,2}(st|nd|rd|th)\b|\b(bc|ad|bce|ce)\b", re.I),
    "number": re.compile(r"\d|\b(" + _NUMWORDS + r")\b", re.I),
    "percent": re.compile(r"%|\bper ?cent\b", re.I),
    "duration": re.compile(r"\b(\d[\d,.]*|" + _NUMWORDS + r"|a|an|few|many)[\s-]+(" + _UNITS
                           + r")\b", re.I),
}
_CAP = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'-]+")
_PLACE = re.compile(r"\b(in|at|from|near|to|into|across|outside|inside|throughout)\s+(the\s+)?"
                    r"([A-Z][\w'-]+)")
_QTOK = re.compile(r"\w+")


def question_info(question: str) -> dict:
    low = question.lower()
    words = set(content_words(question))
    qtype = next((t for t, rx in _WH if rx.search(low)), "other")
    toks = _QTOK.findall(low)
    bigrams = {f"{a} {b}" for a, b in zip(toks, toks[1:])
               if not (a in STOPWORDS and b in STOPWORDS)}
    caps = {m.group().lower() for m in re.finditer(r"\b[A-Z][\w'-]*", question[1:])
            if m.group().lower() in words}
    nums = {w for w in words if any(c.isdigit() for c in w)}
    return {"words": words, "type": qtype, "bigrams": bigrams, "caps": caps, "nums": nums,
            "lowtoks": set(toks)}


def answer_type_found(qtype: str, sent: str, qlow: set[str]) -> float:
    if qtype in _TYPE_RE:
        for m in _TYPE_RE[qtype].finditer(sent):
            if m.group().lower() not in qlow:
                return 1.0
        return 0.0
    if qtype == "person":
        return float(any(m.group().lower() not in qlow for m in _CAP.finditer(sent)))
    if qtype == "place":
        return float(any(m.group(3).lower() not in qlow for m in _PLACE.finditer(sent)))
    return 0.0


FEATURES = ["fused", "fused_gap", "log_rank", "cos", "cos_gap", "dense_z", "lex_z",
            "in_dense", "in_lex", "sent_share", "sent_z", "sent_frac", "pass_share",
            "pass_frac", "win2_share", "span_density", "bigram_frac", "caps_frac",
            "nums_frac", "atype", "atype_win2"] + [f"atype_{t}" for t in TYPES] + \
           ["log_len", "n_sents", "same_doc", "same_doc_best"]


def _found(text: str, low: str, words: set[str]) -> list[tuple[int, str]]:
    """(offset, word) of the question's words in `text` (as rag.retrieve.rerank_by_sentence)."""
    if not words:
        return []
    if len(low) == len(text):
        return whole_words(low, words)
    pattern = r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b"
    return [(m.start(), m.group().lower()) for m in re.finditer(pattern, text, re.I)]


def features(row: dict, q: dict | None = None) -> np.ndarray:
    """(TOP, len(FEATURES)) for one question's candidates."""
    q = q or question_info(row["question"])
    words = q["words"]
    cands = row["cands"]
    n = len(cands)
    per_sent, passage_sets, spans_all, texts = [], [], [], []
    for c in cands:
        text = c["text"]
        low = text.lower()
        found = _found(text, low, words)
        spans = (split_sentences(text) or [(0, len(text))]) if found else [(0, len(text))]
        ends = [b for _, b in spans]
        per = [set() for _ in spans]
        pos = [[] for _ in per]
        for at, w in found:
            j = min(bisect.bisect_right(ends, at), len(per) - 1)
            per[j].add(w)
            pos[j].append(at)
        per_sent.append((per, pos))
        passage_sets.append({w for _, w in found})
        spans_all.append(spans or [(0, len(text))])
        texts.append(text)
    # rarity within the pool (as rerank_by_sentence)
    nd = len(passage_sets)
    weight = {w: math.log((1 + nd) / (1 + sum(w in d for d in passage_sets))) + 1 for w in words}
    total = sum(weight.values()) or 1.0
    X = np.zeros((n, len(FEATURES)))
    dm, ds, dmin = row["dense_stats"]
    lm, ls, lmin = row["lex_stats"]
    f0 = cands[0]["fused"]
    cmax = max(c["cos"] for c in cands)
    qlow = q["lowtoks"]
    docs_count: dict[str, int] = {}
    for c in cands:
        docs_count[c["doc"]] = docs_count.get(c["doc"], 0) + 1
    best_in_doc: dict[str, float] = {}
    for c in cands:
        best_in_doc.setdefault(c["doc"], c["fused"])
    best_vals = []
    for i, c in enumerate(cands):
        per, pos = per_sent[i]
        sums = [sum(weight[w] for w in s) for s in per]
        b = int(np.argmax(sums)) if sums else 0
        best = sums[b] if sums else 0.0
        best_vals.append(best)
        win2 = max([sums[0]] + [sum(weight[w] for w in per[j] | per[j + 1])
                                for j in range(len(per) - 1)])
        p = passage_sets[i]
        text = texts[i]
        a, e = spans_all[i][min(b, len(spans_all[i]) - 1)]
        sent = text[a:e]
        # proximity: characters spanned by the best sentence's matches per matched word
        ps = pos[b]
        density = (max(ps) - min(ps) + 1) / len(per[b]) if len(per[b]) >= 2 else 0.0
        low = text.lower()
        bigram = sum(1 for bg in q["bigrams"] if bg in low) / max(len(q["bigrams"]), 1)
        at = answer_type_found(q["type"], sent, qlow)
        # the best sentence and its better neighbour
        nb = [j for j in (b - 1, b + 1) if 0 <= j < len(per)]
        if nb:
            j = max(nb, key=lambda j: sums[j])
            a2, e2 = spans_all[i][min(j, len(spans_all[i]) - 1)]
            at2 = max(at, answer_type_found(q["type"], text[a2:e2], qlow))
        else:
            at2 = at
        row_f = {
            "fused": c["fused"], "fused_gap": c["fused"] - f0,
            "log_rank": math.log1p(c["rank"]), "cos": c["cos"], "cos_gap": c["cos"] - cmax,
            "dense_z": ((c["dense"] - dm) / ds) if c["dense"] is not None else (dmin - dm) / ds,
            "lex_z": ((c["lex"] - lm) / ls) if c["lex"] is not None else (lmin - lm) / ls,
            "in_dense": float(c["dense"] is not None), "in_lex": float(c["lex"] is not None),
            "sent_share": best / total, "sent_frac": len(per[b]) / max(len(words), 1),
            "pass_share": sum(weight[w] for w in p) / total,
            "pass_frac": len(p) / max(len(words), 1), "win2_share": win2 / total,
            "span_density": math.log1p(density), "bigram_frac": bigram,
            "caps_frac": (len(q["caps"] & p) / len(q["caps"])) if q["caps"] else 0.0,
            "nums_frac": (len(q["nums"] & p) / len(q["nums"])) if q["nums"] else 0.0,
            "atype": at, "atype_win2": at2, "sent_z": 0.0,
            "log_len": math.log(len(text) + 1), "n_sents": math.log(len(per)),
            "same_doc": docs_count[c["doc"]] - 1,
            "same_doc_best": best_in_doc[c["doc"]] - c["fused"],
        }
        for t in TYPES:
            row_f[f"atype_{t}"] = at if q["type"] == t else 0.0
        X[i] = [row_f[f] for f in FEATURES]
    bv = np.array(best_vals)
    X[:, FEATURES.index("sent_z")] = (bv - bv.mean()) / (bv.std() or 1.0)
    return X


# ------------------------------------------------------------------------------ fitting

def paragraph_recall(order_docs: list[list[str]], golds: list[str], ks=(1, 5, 10)) -> dict:
    ranks = []
    for docs, g in zip(order_docs, golds):
        seen = list(dict.fromkeys(docs))
        ranks.append(seen.index(g) + 1 if g in seen else None)
    out = {f"R@{k}": round(sum(1 for x in ranks if x and x <= k) / len(ranks), 4) for k in ks}
    out["MRR@10"] = round(sum(1 / x for x in ranks if x and x <= 10) / len(ranks), 4)
    return out


class Batch:
    """Questions as arrays: features (Q, TOP, F), gold (Q, TOP), each candidate's paragraph as
    a one-hot over the question's own paragraphs (Q, TOP, TOP)."""

    def __init__(self, rows, X):
        self.rows = rows
        self.X = np.stack(X)
        self.gold = np.array([[c["doc"] == r["gold"] for c in r["cands"]] for r in rows])
        self.onehot = np.zeros((len(rows), TOP, TOP), dtype=bool)
        for q, r in enumerate(rows):
            local: dict[str, int] = {}
            for i, c in enumerate(r["cands"]):
                self.onehot[q, i, local.setdefault(c["doc"], len(local))] = True
        self.tie = -1e-9 * np.arange(TOP)  # equal scores keep the fused order

    def ranks(self, scores: np.ndarray) -> np.ndarray:
        """The gold paragraph's rank by paragraph (first occurrence); inf when not in TOP."""
        s = scores + self.tie
        gmax = np.where(self.gold, s, -np.inf).max(1)
        above = (s > gmax[:, None]) & ~self.gold
        n_docs = (above[:, :, None] & self.onehot).any(1).sum(1)
        return np.where(np.isfinite(gmax), n_docs + 1, np.inf)

    def ranks_of_docs(self, lists: list[list[str]]) -> np.ndarray:
        out = []
        for docs, r in zip(lists, self.rows):
            seen = list(dict.fromkeys(docs))
            out.append(seen.index(r["gold"]) + 1 if r["gold"] in seen else np.inf)
        return np.array(out, dtype=float)

    def metrics(self, scores: np.ndarray | None = None, r: np.ndarray | None = None) -> dict:
        r = self.ranks(scores) if r is None else r
        out = {f"R@{k}": round(float((r <= k).mean()), 4) for k in (1, 5, 10)}
        out["MRR@10"] = round(float(np.where(r <= 10, 1 / r, 0).mean()), 4)
        return out


def fit_logistic(X, y, l2=1.0, iters=50):
    """Pointwise logistic regression by Newton's method (with bias)."""
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(A.shape[1])
    R = l2 * np.eye(A.shape[1])
    R[-1, -1] = 0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(A @ w)))
        g = A.T @ (p - y) + R @ w
        H = (A * (p * (1 - p))[:, None]).T @ A + R
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1]


def fit_listwise(Z, gold, l2=1.0, iters=100):
    """Softmax over each question's candidates, maximising the probability of its gold ones:
    mean_q -log(sum_gold p_i) + l2/2 |w|^2 / Q, by Gauss-Newton steps (the softmax's Fisher
    matrix) with backtracking."""
    keep = gold.any(1) & ~gold.all(1)
    Z, G = Z[keep], gold[keep].astype(float)
    Q, _, F = Z.shape

    def loss_grad(w):
        s = Z @ w
        s = s - s.max(1, keepdims=True)
        e = np.exp(s)
        p = e / e.sum(1, keepdims=True)
        pg = p * G
        mass = pg.sum(1)
        pg = pg / mass[:, None]
        loss = -np.log(mass).sum() + 0.5 * l2 * w @ w
        g = np.einsum("qi,qif->f", p - pg, Z) + l2 * w
        return loss, g, p

    w = np.zeros(F)
    loss, g, p = loss_grad(w)
    for _ in range(iters):
        mu = np.einsum("qi,qif->qf", p, Z)
        H = np.einsum("qi,qif,qig->fg", p, Z, Z) - mu.T @ mu + l2 * np.eye(F)
        step = np.linalg.solve(H, g)
        t = 1.0
        while True:
            nl, ng, np_ = loss_grad(w - t * step)
            if nl <= loss or t < 1e-4:
                break
            t /= 2
        w, converged = w - t * step, loss - nl < 1e-9 * Q
        loss, g, p = nl, ng, np_
        if converged:
            break
    return w


def fit_pairwise(Z, gold, l2=1.0, iters=50, hard: int | None = None):
    """RankNet-style: logistic on (gold - other) differences within a question; with `hard`,
    only the others among the first `hard` fused candidates."""
    D = []
    for X, y in zip(Z, gold):
        gi = np.flatnonzero(y)
        ni = np.flatnonzero(~y)
        if hard:
            ni = ni[ni < hard]
        if len(gi) == 0 or len(ni) == 0:
            continue
        D.append((X[gi][:, None, :] - X[ni][None, :, :]).reshape(-1, X.shape[1]))
    D = np.vstack(D)
    w = np.zeros(D.shape[1])
    R = l2 * np.eye(D.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(D @ w)))
        g = -D.T @ (1 - p) + R @ w
        H = (D * (p * (1 - p))[:, None]).T @ D + R
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def objective(m: dict) -> float:
    return m["R@5"] + 0.5 * m["R@1"] + 0.25 * m["R@10"]


def coordinate_ascent(Z, batch: Batch, w0, rounds=4,
                      grid=(-1.0, -0.5, -0.25, -0.1, -0.05, 0.05, 0.1, 0.25, 0.5, 1.0)):
    """RankLib-style: each weight in turn moved by the step of the grid that best improves the
    metric on the fitting questions (the first weight's scale kept at 1: only directions)."""
    w = np.array(w0, dtype=float)
    w = w / (abs(w[0]) or 1.0)
    best = objective(batch.metrics(Z @ w))
    for _ in range(rounds):
        improved = False
        for f in range(1, len(w)):
            for d in grid:
                trial = w.copy()
                trial[f] += d
                val = objective(batch.metrics(Z @ trial))
                if val > best + 1e-9:
                    best, w, improved = val, trial, True
        if not improved:
            break
    return w


def standardise(X: np.ndarray, mean, std) -> np.ndarray:
    return (X - mean) / std


def fit_model(method: str, Zf, fit: Batch, l2=1.0):
    if method == "logistic":
        return fit_logistic(Zf.reshape(-1, Zf.shape[2]), fit.gold.reshape(-1).astype(float), l2)
    if method == "pairwise":
        return fit_pairwise(Zf, fit.gold, l2)
    if method == "pairwise10":
        return fit_pairwise(Zf, fit.gold, l2, hard=10)
    if method == "listwise":
        return fit_listwise(Zf, fit.gold, l2)
    if method == "listwise+ca":
        return coordinate_ascent(Zf, fit, fit_listwise(Zf, fit.gold, l2))
    raise ValueError(method)


def run_fit(args) -> None:
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        data = pickle.load(f)
    rows = data["rows"]
    assert all(r["index"] % 2 == 0 for r in rows)
    t0 = time.perf_counter()
    Xall = [features(r) for r in rows]
    t_feat = (time.perf_counter() - t0) / len(rows)
    fit = Batch(rows[:FIT], Xall[:FIT])
    val = Batch(rows[FIT:], Xall[FIT:])
    flat = fit.X.reshape(-1, fit.X.shape[2])
    mean, std = flat.mean(0), flat.std(0)
    std[std == 0] = 1.0
    print(f"features: {t_feat * 1000:.3f} ms a question (30 candidates, incl. question parsing)")
    print(f"fit {len(fit.rows)} / validation {len(val.rows)} even questions")
    for name, b in (("val", val), ("fit", fit)):
        print(f"baseline (Retriever.search) {name}",
              paragraph_recall([r["base_docs"] for r in b.rows], [r["gold"] for r in b.rows]))
    fi = FEATURES.index("fused")
    print("fused only                  val", val.metrics(val.X[:, :, fi]))

    def run(names, method, l2=1.0):
        idx = [FEATURES.index(f) for f in names]
        Zf = standardise(fit.X[:, :, idx], mean[idx], std[idx])
        Zv = standardise(val.X[:, :, idx], mean[idx], std[idx])
        w = fit_model(method, Zf, fit, l2)
        return w, val.metrics(Zv @ w), fit.metrics(Zf @ w)

    methods = args.methods.split(",")
    for name, names in feature_sets().items():
        if args.sets and name not in args.sets.split(","):
            continue
        for method in methods:
            w, rv, rf = run(names, method)
            print(f"{name:14s} {method:11s} val {rv}  fit R@1 {rf['R@1']} R@5 {rf['R@5']}",
                  flush=True)
            if args.weights:
                print("   ", dict(zip(names, np.round(w, 4).tolist())))


def feature_sets() -> dict:
    return {"fused+sent": ["fused", "sent_z"],
            "fused+sent+r": ["fused", "log_rank", "sent_z"],
            "all": list(FEATURES)}


GROUPS = {
    "fusion": ["fused", "fused_gap", "log_rank"],
    "dense": ["cos", "cos_gap", "dense_z", "in_dense"],
    "lexical": ["lex_z", "in_lex"],
    "sentence": ["sent_share", "sent_z", "sent_frac"],
    "passage": ["pass_share", "pass_frac", "win2_share"],
    "proximity": ["span_density"],
    "bigram": ["bigram_frac"],
    "names_nums": ["caps_frac", "nums_frac"],
    "atype": ["atype", "atype_win2"] + [f"atype_{t}" for t in TYPES],
    "length": ["log_len", "n_sents"],
    "same_doc": ["same_doc", "same_doc_best"],
}


def ablate(args) -> None:
    fit, val, mean, std = load_batches(args)
    base_v = val.ranks_of_docs([r["base_docs"] for r in val.rows])

    def run(names, method="listwise"):
        idx = [FEATURES.index(f) for f in names]
        Zf = standardise(fit.X[:, :, idx], mean[idx], std[idx])
        Zv = standardise(val.X[:, :, idx], mean[idx], std[idx])
        w = fit_model(method, Zf, fit, args.l2)
        rv = val.ranks(Zv @ w)
        m = val.metrics(Zv @ w)
        wins = int(((rv <= 5) & (base_v > 5)).sum())
        losses = int(((rv > 5) & (base_v <= 5)).sum())
        return m, wins, losses

    every = [f for g in GROUPS.values() for f in g]
    m, wn, ls = run(every)
    print(f"{'all':24s} {m}  R@5 vs baseline +{wn}/-{ls}", flush=True)
    for g, names in GROUPS.items():
        m, wn, ls = run([f for f in every if f not in names])
        print(f"{'all - ' + g:24s} {m}  +{wn}/-{ls}", flush=True)
    core = ["fused", "sent_z"]
    m, wn, ls = run(core)
    print(f"{'fused+sent_z':24s} {m}  +{wn}/-{ls}", flush=True)
    for g, names in GROUPS.items():
        m, wn, ls = run(list(dict.fromkeys(core + names)))
        print(f"{'fused+sent_z + ' + g:24s} {m}  +{wn}/-{ls}", flush=True)


def load_batches(args):
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        rows = pickle.load(f)["rows"]
    assert all(r["index"] % 2 == 0 for r in rows)
    X = [features(r) for r in rows]
    fit, val = Batch(rows[:FIT], X[:FIT]), Batch(rows[FIT:], X[FIT:])
    if args.swap:  # fit on the later questions, validate on the first FIT
        fit, val = Batch(rows[FIT:], X[FIT:]), Batch(rows[:FIT], X[:FIT])
    flat = fit.X.reshape(-1, fit.X.shape[2])
    mean, std = flat.mean(0), flat.std(0)
    std[std == 0] = 1.0
    return fit, val, mean, std



COMPACT = ["fused", "cos", "lex_z", "sent_z", "sent_share", "win2_share", "pass_frac",
           "bigram_frac", "atype", "atype_number", "same_doc_best", "in_dense"]


def cross_validate(args) -> None:
    """k-fold over all the cached even questions (contiguous blocks): every question is scored
    by a model fitted without it; pooled R@k against the baseline on the same questions."""
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        rows = pickle.load(f)["rows"]
    assert all(r["index"] % 2 == 0 for r in rows)
    allb = Batch(rows, [features(r) for r in rows])
    base = allb.ranks_of_docs([r["base_docs"] for r in rows])
    print(f"{len(rows)} even questions, {args.folds}-fold; baseline", allb.metrics(r=base))
    every = [f for g in GROUPS.values() for f in g]
    sets = {"all": every, "all-proximity": [f for f in every if f != "span_density"],
            "compact": COMPACT, "fused+sent_z": ["fused", "sent_z"],
            "compact-same_doc": [f for f in COMPACT if f != "same_doc_best"]}
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    folds = np.array_split(np.arange(len(rows)), args.folds)
    for name, names in sets.items():
        idx = [FEATURES.index(f) for f in names]
        for l2 in [float(x) for x in args.l2s.split(",")]:
            ranks = np.zeros(len(rows))
            for test in folds:
                train = np.setdiff1d(np.arange(len(rows)), test)
                Xtr = allb.X[train][:, :, idx]
                flat = Xtr.reshape(-1, len(idx))
                mean, std = flat.mean(0), flat.std(0)
                std[std == 0] = 1
                sub = Batch.__new__(Batch)
                sub.gold, sub.onehot, sub.tie = allb.gold[train], allb.onehot[train], allb.tie
                w = fit_model(args.method, (Xtr - mean) / std, sub, l2)
                tb = Batch.__new__(Batch)
                tb.gold, tb.onehot, tb.tie = allb.gold[test], allb.onehot[test], allb.tie
                ranks[test] = tb.ranks(((allb.X[test][:, :, idx] - mean) / std) @ w)
            wins = int(((ranks <= 5) & (base > 5)).sum())
            losses = int(((ranks > 5) & (base <= 5)).sum())
            w1 = int(((ranks <= 1) & (base > 1)).sum())
            l1 = int(((ranks > 1) & (base <= 1)).sum())
            print(f"{name:18s} l2={l2:<6g} {allb.metrics(r=ranks)}  R@5 +{wins}/-{losses}"
                  f"  R@1 +{w1}/-{l1}", flush=True)



# ------------------------------------------------------------------------------ query time

_SENT_END = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def compact_features(question: str, cands: list[dict], lex_stats) -> np.ndarray:
    """COMPACT's columns for one question, computed as rag/retrieve.py would (no caches): the
    re-rank's whole cost once the fused lists and the candidates' chunks and vectors are read."""
    words = set(content_words(question))
    low_q = question.lower()
    qtype = next((t for t, rx in _WH if rx.search(low_q)), "other")
    toks = _QTOK.findall(low_q)
    qlow = set(toks)
    bigrams = [f"{a} {b}" for a, b in zip(toks, toks[1:])
               if not (a in STOPWORDS and b in STOPWORDS)]
    nbg = max(len(set(bigrams)), 1)
    bigrams = set(bigrams)
    n = len(cands)
    pers, sets, spans_all, lows = [], [], [], []
    for c in cands:
        text = c["text"]
        low = text.lower()
        found = _found(text, low, words)
        if found:
            # sentence ends by one pattern, not split_sentences (0.2 ms for 30 passages; this
            # ignores abbreviations): a sentence is text[start of one: start of the next]
            cuts = [m.end() for m in _SENT_END.finditer(text)]
            spans = list(zip([0] + cuts, cuts + [len(text)]))
            ends = cuts + [len(text)]
            per = [set() for _ in spans]
            last = len(per) - 1
            for at, w in found:
                per[min(bisect.bisect_right(ends, at), last)].add(w)
        else:
            spans, per = [(0, len(text))], [set()]
        pers.append(per)
        sets.append({w for _, w in found})
        spans_all.append(spans)
        lows.append(low)
    nd = len(sets)
    weight = {w: math.log((1 + nd) / (1 + sum(w in d for d in sets))) + 1 for w in words}
    total = sum(weight.values()) or 1.0
    nw = max(len(words), 1)
    lm, ls, lmin = lex_stats
    best_in_doc: dict[str, float] = {}
    for c in cands:
        if c["doc"] not in best_in_doc:
            best_in_doc[c["doc"]] = c["fused"]
    X = np.empty((n, len(COMPACT)))
    typed = qtype != "other"
    for i, c in enumerate(cands):
        per = pers[i]
        sums = [sum([weight[w] for w in s]) for s in per]
        best = max(sums)
        b = sums.index(best)
        win2 = best
        for j in range(len(per) - 1):
            if sums[j] and sums[j + 1]:
                win2 = max(win2, sum([weight[w] for w in per[j] | per[j + 1]]))
        low = lows[i]
        bg = sum(1 for x in bigrams if x in low) / nbg if bigrams else 0.0
        if typed:
            a, e = spans_all[i][b]
            at = answer_type_found(qtype, c["text"][a:e], qlow)
        else:
            at = 0.0
        X[i, 0] = c["fused"]
        X[i, 1] = c["cos"]
        X[i, 2] = (c["lex"] - lm) / ls if c["lex"] is not None else (lmin - lm) / ls
        X[i, 3] = best
        X[i, 4] = best / total
        X[i, 5] = win2 / total
        X[i, 6] = len(sets[i]) / nw
        X[i, 7] = bg
        X[i, 8] = at
        X[i, 9] = at if qtype == "number" else 0.0
        X[i, 10] = best_in_doc[c["doc"]] - c["fused"]
        X[i, 11] = c["dense"] is not None
    s = X[:, 3]
    X[:, 3] = (s - s.mean()) / (s.std() or 1.0)
    return X


def timing(args) -> None:
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        rows = pickle.load(f)["rows"][:2000]
    w = np.random.default_rng(0).normal(size=len(COMPACT))
    for _ in range(3):
        t0 = time.perf_counter()
        for r in rows:
            X = compact_features(r["question"], r["cands"][:args.top], r["lex_stats"])
            order = np.argsort(-(X @ w), kind="stable")  # noqa: F841
        dt = (time.perf_counter() - t0) / len(rows)
        print(f"compact re-rank, features + scores + sort: {dt * 1000:.3f} ms a question "
              f"({len(rows)} questions, {args.top} candidates, one thread)")
    from rag.retrieve import RERANK, rerank_by_sentence
    from rag.types import Chunk

    for top in (RERANK, TOP):
        total = 0.0
        for r in rows:
            cs = r["cands"][:top]
            chunks = {c["rowid"]: Chunk("", c["source"], c["start"], c["end"], c["text"], 0)
                      for c in cs}
            fused = {c["rowid"]: c["fused"] for c in r["cands"]}
            t1 = time.perf_counter()
            rerank_by_sentence(r["question"], [c["rowid"] for c in cs], chunks, fused)
            total += time.perf_counter() - t1
        print(f"today's rerank_by_sentence over {top}: "
              f"{total / len(rows) * 1000:.3f} ms a question")



def compact_batch(rows, top: int) -> Batch:
    """Batch of COMPACT features over each question's first `top` candidates; the rest keep
    the fused order below them."""
    X = []
    for r in rows:
        x = np.zeros((TOP, len(COMPACT)))
        x[:top] = compact_features(r["question"], r["cands"][:top], r["lex_stats"])
        X.append(x)
    b = Batch(rows, X)
    b.valid = np.arange(TOP) < top
    return b


def cv_fast(args) -> None:
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        rows = pickle.load(f)["rows"]
    assert all(r["index"] % 2 == 0 for r in rows)
    allb = compact_batch(rows, args.top)
    base = allb.ranks_of_docs([r["base_docs"] for r in rows])
    print(f"{len(rows)} even questions, {args.folds}-fold, top {args.top}; baseline",
          allb.metrics(r=base))
    v = allb.valid
    sets = {"compact": COMPACT,
            "compact-atype": [f for f in COMPACT if not f.startswith("atype")],
            "compact-same_doc": [f for f in COMPACT if f != "same_doc_best"],
            "compact-bigram": [f for f in COMPACT if f != "bigram_frac"],
            "compact-cos": [f for f in COMPACT if f != "cos"],
            "final": [f for f in COMPACT if f != "same_doc_best"]}
    if args.sets:
        sets = {k: x for k, x in sets.items() if k in args.sets.split(",")}
    folds = np.array_split(np.arange(len(rows)), args.folds)
    for name, names in sets.items():
        idx = [COMPACT.index(f) for f in names]
        ranks = np.zeros(len(rows))
        for test in folds:
            train = np.setdiff1d(np.arange(len(rows)), test)
            Xtr = allb.X[train][:, v][:, :, idx]
            flat = Xtr.reshape(-1, len(idx))
            mean, std = flat.mean(0), flat.std(0)
            std[std == 0] = 1
            sub = Batch.__new__(Batch)
            sub.gold, sub.onehot = allb.gold[train][:, v], allb.onehot[train][:, v][:, :, v]
            sub.tie = allb.tie[v]
            w = fit_model(args.method, (Xtr - mean) / std, sub, args.l2)
            tb = Batch.__new__(Batch)
            tb.gold, tb.onehot, tb.tie = allb.gold[test], allb.onehot[test], allb.tie
            sc = ((allb.X[test][:, :, idx] - mean) / std) @ w
            sc = np.where(v, sc, -1e6)  # the rest below, in fused order (tie)
            ranks[test] = tb.ranks(sc)
        wins = int(((ranks <= 5) & (base > 5)).sum())
        losses = int(((ranks > 5) & (base <= 5)).sum())
        w1 = int(((ranks <= 1) & (base > 1)).sum())
        l1 = int(((ranks > 1) & (base <= 1)).sum())
        print(f"{name:18s} {allb.metrics(r=ranks)}  R@5 +{wins}/-{losses}  R@1 +{w1}/-{l1}",
              flush=True)



FINAL = [f for f in COMPACT if f != "same_doc_best"]


def final(args) -> None:
    """The model to carry into rag/retrieve.py: FINAL over the first `top` candidates, fitted
    (listwise) on the first FIT even questions, validated on the rest."""
    with open(CACHE / f"cands_even_{args.n}.pkl", "rb") as f:
        rows = pickle.load(f)["rows"]
    assert all(r["index"] % 2 == 0 for r in rows)
    allb = compact_batch(rows, args.top)
    v = allb.valid
    idx = [COMPACT.index(f) for f in FINAL]
    tr, te = np.arange(FIT), np.arange(FIT, len(rows))
    Xtr = allb.X[tr][:, v][:, :, idx]
    flat = Xtr.reshape(-1, len(idx))
    mean, std = flat.mean(0), flat.std(0)
    std[std == 0] = 1
    sub = Batch.__new__(Batch)
    sub.gold, sub.onehot, sub.tie = allb.gold[tr][:, v], allb.onehot[tr][:, v][:, :, v], allb.tie[v]
    w = fit_model(args.method, (Xtr - mean) / std, sub, args.l2)
    raw = w / std  # score = X @ raw (+ a constant that does not change the order)
    for name, part in (("validation", te), ("fit", tr)):
        b = Batch.__new__(Batch)
        b.gold, b.onehot, b.tie = allb.gold[part], allb.onehot[part], allb.tie
        b.rows = [rows[i] for i in part]
        base = b.ranks_of_docs([r["base_docs"] for r in b.rows])
        sc = np.where(v, allb.X[part][:, :, idx] @ raw, -1e6)
        ranks = b.ranks(sc)
        wins = int(((ranks <= 5) & (base > 5)).sum())
        losses = int(((ranks > 5) & (base <= 5)).sum())
        w1 = int(((ranks <= 1) & (base > 1)).sum())
        l1 = int(((ranks > 1) & (base <= 1)).sum())
        print(f"{name} ({len(part)} even questions, top {args.top})")
        print("  baseline (Retriever.search)", b.metrics(r=base))
        print("  learned re-rank            ", b.metrics(r=ranks),
              f" R@5 +{wins}/-{losses}, R@1 +{w1}/-{l1}")
    print("standardised weights:", dict(zip(FINAL, np.round(w, 4).tolist())))
    print("mean:", dict(zip(FINAL, np.round(mean, 5).tolist())))
    print("std: ", dict(zip(FINAL, np.round(std, 5).tolist())))
    print("raw-unit weights (score = sum raw_i * x_i):",
          dict(zip(FINAL, [float(f"{x:.5g}") for x in raw])))



def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["cache", "fit", "ablate", "cv", "timing", "cvfast", "final"])
    p.add_argument("--n", type=int, default=5285)
    p.add_argument("--methods", default="logistic,pairwise,pairwise10,listwise,listwise+ca")
    p.add_argument("--sets", default="")
    p.add_argument("--weights", action="store_true")
    p.add_argument("--swap", action="store_true")
    p.add_argument("--l2", type=float, default=1.0)
    p.add_argument("--l2s", default="1")
    p.add_argument("--top", type=int, default=TOP)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--method", default="listwise")
    args = p.parse_args()
    if args.what == "cache":
        build_cache(args.n)
    elif args.what == "timing":
        timing(args)
    elif args.what == "cvfast":
        cv_fast(args)
    elif args.what == "final":
        final(args)
    elif args.what == "cv":
        cross_validate(args)
    elif args.what == "ablate":
        ablate(args)
    else:
        run_fit(args)


if __name__ == "__main__":
    main()
