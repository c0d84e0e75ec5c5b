"""Performance and scale: every stage of `rag` measured side by side, in one run.

    .venv/bin/python bench/perf.py                 # all steps (what `make bench` runs)
    .venv/bin/python bench/perf.py --steps startup,generation --runs 3

Steps: startup (rag --help, cold and warm ask, peak RSS), ingest (SQuAD dev, 2,067 paragraphs:
`rag ingest` against a bare SentenceTransformer.encode of the same chunks), retrieval (p50/p99 at
2k real chunks, and at 100k and 1M synthetic vectors with the index `rag` chooses, recall@10
against exact search, index memory), generation (prompt and decode tokens/s through rag's LLM
against raw llama-cpp-python, same prompt, model and threads).

Every figure is the median of several runs with min and max, and the 1-minute load average when
it was taken: the machine is shared, so comparisons are ratios measured in the same run,
alternating the two sides. Results: bench/results.json (merged by step) and bench/results.md.
Scratch data (the corpus, indexes, the 1M vectors' ground truth) lives in bench/work/perf/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / "work" / "perf"
RESULTS = ROOT / "bench" / "results.json"
TABLE = ROOT / "bench" / "results.md"
SEEDS = ROOT / "seeds"
RAG = [str(ROOT / ".venv" / "bin" / "rag")]
PY = str(ROOT / ".venv" / "bin" / "python")
STEPS = ("startup", "ingest", "retrieval", "generation")

QUESTIONS = ["How many North Korean personnel have been deployed to Russia?",
             "Who signed the treaty?",
             "When did the talks begin?",
             "What did the ministry say about the deployment?"]

# Peers, measured on this machine for the SQuAD corpus.
PEER_INGEST_S = {"LangChain (default pipeline)": 95.0, "LlamaIndex (default pipeline)": 105.0}
PEER_QUERY_MS_2K = 13.0


# -- measuring ------------------------------------------------------------------------------

def load() -> float:
    return round(os.getloadavg()[0], 2)


def stats(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits),
            "runs": len(values), "values": [round(v, digits) for v in values]}


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_child(cmd: list[str], env: dict | None = None, stdin: str | None = None,
              check: bool = True) -> dict:
    """Wall time and peak RSS (os.wait4: this child alone) of one process."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            env=full_env, text=True, cwd=ROOT)
    out, err = proc.communicate(stdin)
    wall = time.perf_counter() - t0
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN only as a maximum, so
    # the peak is read from /usr/bin/time when available (see rss_child) instead.
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"wall_s": wall, "stdout": out, "stderr": err, "rc": proc.returncode}


def rss_child(cmd: list[str], env: dict | None = None, stdin: str | None = None) -> dict:
    """run_child under /usr/bin/time -f: adds the peak RSS of that process in MiB."""
    marker = "@@maxrss_kb="
    res = run_child(["/usr/bin/time", "-f", marker + "%M %U %S", *cmd], env=env, stdin=stdin)
    lines = res["stderr"].splitlines()
    found = [x[len(marker):].split() for x in lines if x.startswith(marker)]
    res["peak_rss_mib"] = int(found[-1][0]) / 1024 if found else None
    # CPU seconds (user + system): what the process needs, whatever share of the cores the
    # other users of the machine leave it
    res["cpu_s"] = float(found[-1][1]) + float(found[-1][2]) if found else None
    res["stderr"] = "\n".join(x for x in lines if not x.startswith(marker))
    return res


def machine() -> dict:
    from bench.machine import cpu_name

    cpu = cpu_name()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version
    for pkg in ("torch", "sentence-transformers", "faiss-cpu", "llama_cpp_python", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "mem_gib": mem,
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions}


def save(step: str, value: dict) -> None:
    """Each step keeps the machine it was measured on: a step run again on another CPU kind
    does not relabel the others."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[step] = {**value, "machine": machine()}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLE.write_text(markdown(results))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# -- step: start-up and end to end ----------------------------------------------------------

def seeds_index() -> Path:
    index = WORK / "seeds-index"
    if not (index / "rag.sqlite").exists():
        run_child(RAG + ["ingest", str(SEEDS), "--index", str(index)])
    return index


def step_startup(runs: int) -> dict:
    out: dict = {}
    helps = [rss_child(RAG + ["--help"]) for _ in range(max(5, runs + 2))]
    out["help_s"] = {**stats([h["wall_s"] for h in helps]), "load": load()}
    out["help_cpu_s"] = stats([h["cpu_s"] for h in helps])
    log("help", out["help_s"]["median"])

    index = WORK / "seeds-ingest"
    ingests = []
    for _ in range(runs):
        subprocess.run(["rm", "-rf", str(index)], check=True)
        r = rss_child(RAG + ["ingest", str(SEEDS), "--index", str(index)])
        ingests.append(r)
    out["seeds_ingest_s"] = {**stats([r["wall_s"] for r in ingests]), "load": load()}
    out["seeds_ingest_peak_rss_mib"] = stats([r["peak_rss_mib"] for r in ingests], 1)

    index = seeds_index()
    colds = []
    for i in range(runs):
        r = rss_child(RAG + ["ask", QUESTIONS[i % len(QUESTIONS)], "--json", "--index",
                             str(index)])
        r["json"] = json.loads(r["stdout"])
        colds.append(r)
        log("cold ask", round(r["wall_s"], 2), r["json"]["timings"])
    out["cold_ask_s"] = {**stats([r["wall_s"] for r in colds]), "load": load()}
    out["cold_ask_peak_rss_mib"] = stats([r["peak_rss_mib"] for r in colds], 1)
    out["cold_ask_cpu_s"] = stats([r["cpu_s"] for r in colds])
    out["cold_ask_inside_s"] = stats([r["json"]["timings"]["total_s"] for r in colds])
    warm = json.loads(run_child([PY, __file__, "_warm", str(index), str(runs)])["stdout"])
    out["warm_ask_s"] = {**stats(warm["warm_s"]), "load": load()}
    out["first_ask_in_process_s"] = round(warm["first_s"], 3)
    out["process_setup_s"] = warm["setup"]
    out["cold_imports"] = warm["imports"]

    # Where a cold ask spends its time before answering: imports (python -X importtime)
    out["import_profile_ms"] = import_profile()
    return out


def warm_child(index: str, runs: int) -> None:
    """Child process: one Answerer, a first question, then `runs` more; the later ones are the
    warm asks a `rag chat` session sees."""
    t0 = time.perf_counter()
    from rag.answer import Answerer
    from rag.config import Settings
    t_import = time.perf_counter()
    a = Answerer(Settings.from_env(index_dir=Path(index)))
    t_open = time.perf_counter()
    first = time.perf_counter()
    a.ask(QUESTIONS[0])
    first = time.perf_counter() - first
    warm = []
    for i in range(runs):
        t = time.perf_counter()
        a.ask(QUESTIONS[1 + i % (len(QUESTIONS) - 1)])
        warm.append(time.perf_counter() - t)
    heavy = [m for m in ("torch", "sentence_transformers", "transformers", "sklearn", "faiss",
                         "llama_cpp") if m in sys.modules]
    print(json.dumps({"first_s": first, "warm_s": warm, "imports": heavy,
                      "setup": {"import_s": round(t_import - t0, 3),
                                "open_index_s": round(t_open - t_import, 3)}}))


def import_profile() -> dict:
    code = "from rag.answer import Answerer; import faiss; from rag.minilm import MiniLM"
    r = run_child([PY, "-X", "importtime", "-c", code])
    top: dict[str, int] = {}
    for line in r["stderr"].splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line[len("import time:"):].split("|")
        cum = cum.strip()
        if not cum.isdigit():
            continue
        if name.startswith(" ") and not name.startswith("  "):  # top-level imports only
            top[name.strip()] = int(cum) // 1000
    total = sum(top.values())
    return {"total_ms": total,
            **dict(sorted(top.items(), key=lambda kv: -kv[1])[:8])}


# -- step: ingest -------------------------------------------------------------------------

def squad_docs() -> Path:
    from bench.squad import load_squad

    docs = WORK / "squad-docs"
    docs.mkdir(parents=True, exist_ok=True)
    paragraphs, _ = load_squad()
    for pid, text in paragraphs:
        f = docs / f"{pid}.txt"
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
    return docs


def step_ingest(runs: int, threads: int) -> dict:
    docs = squad_docs()
    index = WORK / "squad-index"
    env = {"RAG_THREADS": str(threads)}
    pairs = []
    for i in range(runs):
        subprocess.run(["rm", "-rf", str(index)], check=True)
        rag = rss_child(RAG + ["ingest", str(docs), "--index", str(index), "--json"], env=env)
        report = json.loads(rag["stdout"])
        texts_file = WORK / "squad-chunks.json"
        if i == 0:
            import sqlite3
            db = sqlite3.connect(index / "rag.sqlite")
            rows = list(db.execute("SELECT text, n_tokens FROM chunks ORDER BY id"))
            db.close()
            texts_file.write_text(json.dumps([t for t, _ in rows]))
            n_chunks, n_tokens = len(rows), sum(n for _, n in rows)
        bare = {}
        # float32 once (it is the slow reference, ~2x bfloat16); bfloat16, as rag computes
        # on this CPU, in every pair
        for precision in (("fp32", "bf16") if i == 0 else ("bf16",)):
            r = rss_child([PY, __file__, "_encode", str(texts_file), str(threads), precision],
                          env=env)
            bare[precision] = {**json.loads(r["stdout"]), "process_s": r["wall_s"],
                               "cpu_s": r["cpu_s"]}
        pairs.append({"rag_s": rag["wall_s"], "rag_rss": rag["peak_rss_mib"],
                      "rag_cpu_s": rag["cpu_s"],
                      "bare": bare, "load": load()})
        log("ingest pair", pairs[-1], report["n_chunks"])
    out = {"documents": len(list(docs.glob("*.txt"))), "chunks": n_chunks,
           "tokens": n_tokens, "threads": threads, "batch_size": 64}
    out["rag_ingest_s"] = {**stats([p["rag_s"] for p in pairs]), "load": load()}
    same = "bf16" if bf16_used() else "fp32"
    out["rag_precision"] = same
    for precision in ("fp32", "bf16"):
        measured = [p for p in pairs if precision in p["bare"]]
        out[f"bare_encode_{precision}_s"] = stats([p["bare"][precision]["encode_s"]
                                                   for p in measured])
        out[f"bare_process_{precision}_s"] = stats([p["bare"][precision]["process_s"]
                                                    for p in measured])
        out[f"ratio_rag_over_bare_encode_{precision}"] = stats(
            [p["rag_s"] / p["bare"][precision]["encode_s"] for p in measured])
    # the overhead figure: rag against the same computation (same precision) done bare
    out["ratio_rag_over_bare_encode"] = out[f"ratio_rag_over_bare_encode_{same}"]
    out["bare_encode_s"] = out[f"bare_encode_{same}_s"]
    out["ratio_rag_over_bare_process"] = stats(
        [p["rag_s"] / p["bare"][same]["process_s"] for p in pairs])
    # CPU seconds are what each side needed, whatever the other users of the machine left it:
    # the overhead figure that the load of the moment does not distort
    out["rag_cpu_s"] = stats([p["rag_cpu_s"] for p in pairs], 1)
    out["bare_process_cpu_s"] = stats([p["bare"][same]["cpu_s"] for p in pairs], 1)
    out["ratio_rag_over_bare_process_cpu"] = stats(
        [p["rag_cpu_s"] / p["bare"][same]["cpu_s"] for p in pairs])
    out["chunks_per_s"] = stats([n_chunks / p["rag_s"] for p in pairs], 1)
    out["tokens_per_s"] = stats([n_tokens / p["rag_s"] for p in pairs], 0)
    out["peak_rss_mib"] = stats([p["rag_rss"] for p in pairs], 1)
    out["peers_s"] = PEER_INGEST_S
    out["ratio_rag_over_best_peer"] = round(
        out["rag_ingest_s"]["median"] / min(PEER_INGEST_S.values()), 3)

    # the two engines of rag/embedder.py on one slice of the same chunks, alternated
    eng = json.loads(run_child([PY, __file__, "_engines", str(WORK / "squad-chunks.json"),
                                str(threads)])["stdout"])
    out["engines_chunks_per_s"] = eng
    return out


def bf16_used() -> bool:
    from rag.embedder import cpu_has_bf16

    forced = os.environ.get("RAG_EMBED_BF16")
    return forced == "1" if forced in ("0", "1") else cpu_has_bf16()


def encode_child(texts_file: str, threads: int, precision: str) -> None:
    """The bare reference: SentenceTransformer.encode of the chunk texts in one call (it sorts
    by length itself), batch 64, the same threads; bf16 under torch.autocast."""
    import contextlib

    t0 = time.perf_counter()
    texts = json.loads(Path(texts_file).read_text())
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.config import Settings
    from rag.registry import resolve_embedding
    torch.set_num_threads(threads)
    path = resolve_embedding("all-minilm-l6-v2", Settings.from_env()).path
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.max_seq_length = 256
    t1 = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else \
        contextlib.nullcontext()
    with ctx:
        model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
    t2 = time.perf_counter()
    print(json.dumps({"setup_s": t1 - t0, "encode_s": t2 - t1}))


def engines_child(texts_file: str, threads: int) -> None:
    """chunks/s of rag's engines (rag/minilm.py: numpy; torch in float32 and in bfloat16) and
    of sentence-transformers (bfloat16 under autocast) on the same 256 chunks, alternated."""
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.config import Settings
    from rag.minilm import MiniLM, TorchMiniLM
    from rag.registry import resolve_embedding

    torch.set_num_threads(threads)
    texts = json.loads(Path(texts_file).read_text())[:256]
    path = resolve_embedding("all-minilm-l6-v2", Settings.from_env()).path
    base = MiniLM(path, 256)
    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    st.max_seq_length = 256

    def st_bf16(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return st.encode(batch, batch_size=64, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)

    engines = {"rag_torch_fp32": TorchMiniLM(base, bf16=False).encode,
               "rag_torch_bf16": TorchMiniLM(base, bf16=True).encode,
               "sentence_transformers_bf16": st_bf16, "numpy_fp32": base.encode}
    for encode in engines.values():
        encode(texts[:8])
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(2):
        for name, encode in engines.items():
            t = time.perf_counter()
            encode(texts)
            times[name].append(len(texts) / (time.perf_counter() - t))
    print(json.dumps({k: stats(v, 1) for k, v in times.items()}))


# -- step: retrieval ------------------------------------------------------------------------

def real_vectors() -> tuple:
    """The SQuAD chunk vectors (from the ingest step's index) and 500 SQuAD question vectors
    (rag.minilm's float32 reference forward: sentence-transformers' vectors)."""
    import numpy as np

    cache = WORK / "squad-vectors.npz"
    if cache.exists():
        z = np.load(cache)
        return z["chunks"], z["questions"]
    import sqlite3

    from bench.squad import load_squad
    from rag.config import Settings
    from rag.embedder import Embedder
    from rag.registry import resolve_embedding

    index = WORK / "squad-index"
    if not (index / "rag.sqlite").exists():
        run_child(RAG + ["ingest", str(squad_docs()), "--index", str(index)])
    db = sqlite3.connect(index / "rag.sqlite")
    chunks = np.vstack([np.frombuffer(b, dtype=np.float32)
                        for (b,) in db.execute("SELECT vector FROM chunks ORDER BY id")])
    db.close()
    _, questions = load_squad()
    e = Embedder(resolve_embedding("all-minilm-l6-v2", Settings.from_env()))
    qv = e._numpy_model.encode([q["question"] for q in questions[1::2][:500]])
    np.savez(cache, chunks=chunks, questions=qv)
    return chunks, qv


def synthetic(n: int, chunks, seed: int = 0):
    """n vectors shaped like real embeddings: each is a real SQuAD chunk vector, plus a random
    share (0-0.5) of a second real chunk vector, plus Gaussian noise (sigma 0.03 a dimension,
    about 0.6 in norm), normalised. Real vectors are the first rows (so real questions still
    have their real answers among the million)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((n, chunks.shape[1]), dtype=np.float32)
    out[:len(chunks)] = chunks
    step = 100_000
    for s in range(len(chunks), n, step):
        m = min(step, n - s)
        a = chunks[rng.integers(0, len(chunks), m)]
        b = chunks[rng.integers(0, len(chunks), m)]
        w = rng.uniform(0, 0.5, size=(m, 1)).astype(np.float32)
        v = a + w * b + rng.normal(scale=0.03, size=a.shape).astype(np.float32)
        out[s:s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def latencies(index, queries, k: int = 10) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], k)
        out.append((time.perf_counter() - t) * 1000)
    return out


def step_retrieval(runs: int, sizes: list[int], threads: int) -> dict:
    import faiss
    import numpy as np

    from rag import vector_index as vi

    faiss.omp_set_num_threads(1)  # one query at a time, as `rag ask` searches
    chunks, questions = real_vectors()
    out: dict = {"threshold_exact_max": vi.EXACT_MAX_VECTORS,
                 "target_recall": vi.IVF_TARGET_RECALL,
                 "queries": f"{len(questions)} real SQuAD dev questions (odd-numbered), "
                            "embedded by all-MiniLM-L6-v2",
                 "synthetic": synthetic.__doc__.split("\n\n")[0].replace("\n", " ").strip()}
    out["full_search_2k"] = full_search_2k(runs, threads)
    for n in sizes:
        log("retrieval size", n)
        x = chunks if n <= len(chunks) else synthetic(n, chunks)
        n = len(x)
        gt_file = WORK / f"exact-{n}.npy"
        if gt_file.exists():
            exact = np.load(gt_file)
        else:
            _, exact = faiss.knn(questions, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
            np.save(gt_file, exact)
        kind = vi.index_kind(n)
        # the file name carries the vector index parameters: change them, rebuild
        tag = f"{vi.IVF_TARGET_RECALL}-{vi.TUNE_NOISE}-{vi.IVF_NPROBES[0]}"
        path = WORK / f"index-{n}-{kind}-{tag}.faiss"
        ids = np.arange(n, dtype=np.int64)
        build_s = None
        if path.exists():
            before = rss_mib()
            index = faiss.read_index(str(path))
        else:
            t = time.perf_counter()

            def batches(x=x, ids=ids, n=n):
                for s in range(0, n, 65536):
                    yield ids[s:s + 65536], x[s:s + 65536]
            index = vi.build_index(x.shape[1], n, batches)
            build_s = time.perf_counter() - t
            faiss.write_index(index, str(path))
            del index
            before = rss_mib()
            index = faiss.read_index(str(path))
        rss_delta = rss_mib() - before
        p50s, p99s = [], []
        for _ in range(runs):
            lat = latencies(index, questions)
            p50s.append(percentile(lat, 0.5))
            p99s.append(percentile(lat, 0.99))
        _, found = index.search(questions, 10)
        row = {"n": n, "kind": kind, "p50_ms": {**stats(p50s), "load": load()},
               "p99_ms": stats(p99s), "recall_at_10": round(vi.recall_at(found, exact), 4),
               "index_file_mib": round(path.stat().st_size / 2**20, 1),
               "index_rss_delta_mib": round(rss_delta, 1),
               "build_s": round(build_s, 1) if build_s else "cached"}
        if kind != "flat":
            ivf = faiss.extract_index_ivf(index)
            row.update(nlist=ivf.nlist, nprobe=ivf.nprobe)
            sweep = {}
            keep = ivf.nprobe
            for nprobe in (8, 16, 32, 64, 128):
                ivf.nprobe = nprobe
                _, f = index.search(questions, 10)
                lat = latencies(index, questions[:200])
                sweep[nprobe] = {"recall_at_10": round(vi.recall_at(f, exact), 4),
                                 "p50_ms": round(percentile(lat, 0.5), 3)}
            ivf.nprobe = keep
            row["nprobe_sweep"] = sweep
        del index
        # exact search at the same size, same run: what the approximate index buys
        if kind != "flat":
            flat = faiss.IndexFlatIP(x.shape[1])
            flat.add(x)
            lat = latencies(flat, questions[:100])
            row["exact_p50_ms"] = round(percentile(lat, 0.5), 2)
            row["speedup_over_exact"] = round(row["exact_p50_ms"] / row["p50_ms"]["median"], 1)
            del flat
        out[str(n)] = row
        log(json.dumps({k: v for k, v in row.items() if k != "nprobe_sweep"}))
    return out


def full_search_2k(runs: int, threads: int) -> dict:
    """The whole `Retriever.search` (query embedding, FAISS, FTS5, fusion, collapse) over the
    SQuAD index, in a child process, and its parts. On `threads` threads, as the generation
    step: left to choose, the child would read the load the bench's own ingest step left in
    the 1-minute load average and take one."""
    r = run_child([PY, __file__, "_search", str(WORK / "squad-index"), str(runs)],
                  env={"RAG_THREADS": str(threads)})
    return json.loads(r["stdout"])


def search_child(index: str, runs: int) -> None:
    from bench.squad import load_squad
    from rag.config import Settings
    from rag.retrieve import TUNED, Retriever, late_interaction
    from rag.store import open_store
    from rag.text import search_words

    _, questions = load_squad()
    qs = [q["question"] for q in questions[1::2][:200]]
    store, embedder = open_store(Settings.from_env(index_dir=Path(index)))
    r = Retriever(store, embedder)
    r.search(qs[0])
    index_obj = store.faiss_index()
    has_codes = bool(store.token_codes(store._chunk_ids()[:1].tolist()))
    p50, p99, emb, dense, sentences, lexical, rest = [], [], [], [], [], [], []
    pooled, late = [], []
    for _ in range(runs):
        lat, e_lat, d_lat, s_lat, l_lat, r_lat, p_lat, t_lat = [], [], [], [], [], [], [], []
        for q in qs:
            # each question embedded and its words read afresh, as a new question's are
            embedder._memo.clear()
            embedder._question_memo.clear()
            store._tokenizer._memo.clear()
            t = time.perf_counter()
            r.search(q, k=5)
            lat.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()  # again: the question's vector is remembered now
            r.search(q, k=5)
            r_lat.append((time.perf_counter() - t) * 1000)
            embedder._question_memo.clear()
            t = time.perf_counter()
            v, qtokens = embedder.embed_question(q)
            e_lat.append((time.perf_counter() - t) * 1000)
            v = v[None, :]
            t = time.perf_counter()
            store.nearest(v[0], 50)
            d_lat.append((time.perf_counter() - t) * 1000)
            found = dict.fromkeys(r for r, _ in store.nearest(v[0], 50) +
                                  store.lexical_search(search_words(q), 50, TUNED.context_weight))
            t = time.perf_counter()
            store.sentence_scores(v[0], found)
            s_lat.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            store.pool_lexical(search_words(q), found, TUNED.pool_idf_weight, TUNED.context_weight)
            p_lat.append((time.perf_counter() - t) * 1000)
            if has_codes:  # written by an ingest with late interaction on
                t = time.perf_counter()
                late_interaction(store, embedder, qtokens, list(found))
                t_lat.append((time.perf_counter() - t) * 1000)
            store._tokenizer._memo.clear()
            t = time.perf_counter()
            store.lexical_search(search_words(q), 50, TUNED.context_weight)
            l_lat.append((time.perf_counter() - t) * 1000)
        p50.append(percentile(lat, 0.5))
        p99.append(percentile(lat, 0.99))
        emb.append(percentile(e_lat, 0.5))
        dense.append(percentile(d_lat, 0.5))
        sentences.append(percentile(s_lat, 0.5))
        lexical.append(percentile(l_lat, 0.5))
        rest.append(percentile(r_lat, 0.5))
        pooled.append(percentile(p_lat, 0.5))
        if t_lat:
            late.append(percentile(t_lat, 0.5))
    # the question alone through each engine rag has (one thread, alternated per question):
    # what the query embedding could cost where torch is loaded anyway
    import torch

    from rag.minilm import TorchMiniLM

    torch.set_num_threads(1)
    base = embedder._numpy_model
    engines = {"numpy_fp32": base.encode, "torch_fp32": TorchMiniLM(base, bf16=False).encode,
               "torch_bf16": TorchMiniLM(base, bf16=True).encode}
    for encode in engines.values():
        encode(qs[:3])
    per_engine: dict[str, list[float]] = {name: [] for name in engines}
    for q in qs:
        for name, encode in engines.items():
            t = time.perf_counter()
            encode([q])
            per_engine[name].append((time.perf_counter() - t) * 1000)
    print(json.dumps({"chunks": index_obj.ntotal, "queries": len(qs),
                      "engine": embedder.engine, "threads": embedder.threads,
                      "query_engines_one_thread_p50_ms": {
                          name: round(percentile(v, 0.5), 3) for name, v in per_engine.items()},
                      "p50_ms": {**stats(p50), "load": load()}, "p99_ms": stats(p99),
                      "embed_query_p50_ms": stats(emb), "dense_p50_ms": stats(dense),
                      "sentence_dense_p50_ms": stats(sentences),
                      "sentences": len(store._sentences.vectors) if store._sentences else 0,
                      "bm25_p50_ms": stats(lexical),
                      "bm25_over_candidates_p50_ms": stats(pooled),
                      **({"late_interaction_p50_ms": stats(late)} if late else {}),
                      "search_without_embedding_p50_ms": stats(rest)}))


# -- step: generation -----------------------------------------------------------------------

def step_generation(runs: int, threads: int) -> dict:
    r = run_child([PY, __file__, "_generation", str(runs), str(threads)])
    return json.loads(r["stdout"])


def generation_child(runs: int, threads: int) -> None:
    import llama_cpp

    from bench.squad import load_squad
    from rag import prompts
    from rag.config import Settings
    from rag.llama_runtime import load_fields, model_defaults
    from rag.llm import LLM
    from rag.registry import resolve_llm

    # A task of the bench's own that makes the model talk for a while (decode speed needs
    # tokens); the same rendered messages go to raw llama-cpp-python.
    pdir = WORK / "prompts"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "retell.system.txt").write_text("Write a long, detailed story.\n")
    (pdir / "retell.user.txt").write_text(
        "Text: {passages}\n\nTell a long story about what happens in this text, at least 300 "
        "words. Begin with this question: {question}\n")
    settings = Settings.from_env(n_threads=threads, prompts_dir=pdir)
    spec = resolve_llm(None, settings)
    paragraphs, questions = load_squad()
    passage = paragraphs[0][1]
    values = {"passages": passage, "question": questions[0]["question"]}
    follow_up = {"passages": passage, "question": questions[1]["question"]}
    new_passage = {"passages": paragraphs[1][1], "question": questions[1]["question"]}
    decode_tokens = 128
    t = time.perf_counter()
    rag_llm = LLM(spec, settings)
    rag_llama = rag_llm._llama
    rag_load = time.perf_counter() - t
    t = time.perf_counter()
    with model_defaults(**load_fields()):  # loaded as rag loads its models
        raw = llama_cpp.Llama(model_path=str(spec.path), n_ctx=rag_llm.n_ctx,
                              n_threads=threads, n_threads_batch=threads, seed=settings.seed,
                              verbose=False)
    raw_load = time.perf_counter() - t
    messages = [{"role": "system", "content": prompts.render_file(
                    settings.prompts_dir, "retell.system.txt", values)},
                {"role": "user", "content": prompts.render_file(
                    settings.prompts_dir, "retell.user.txt", values)}]
    params = dict(max_tokens=decode_tokens, temperature=0.0, top_k=1, top_p=1.0,
                  repeat_penalty=1.0, seed=settings.seed)

    def perf(llama):
        d = llama_cpp.llama_perf_context(llama.ctx)
        return d.n_p_eval, d.t_p_eval_ms, d.n_eval, d.t_eval_ms

    def one(side: str) -> dict:
        llama = rag_llama if side == "rag" else raw
        llama.reset()  # no prefix reuse between runs: the whole prompt is evaluated
        llama_cpp.llama_perf_context_reset(llama.ctx)
        t0 = time.perf_counter()
        if side == "rag":
            g = rag_llm.generate("retell", values, max_tokens=decode_tokens)
            n_out = g.completion_tokens
        else:
            o = raw.create_chat_completion(messages=messages, **params)
            n_out = o["usage"]["completion_tokens"]
        wall = time.perf_counter() - t0
        n_p, t_p, n_e, t_e = perf(llama)
        return {"prompt_tps": n_p / (t_p / 1000), "decode_tps": n_e / (t_e / 1000),
                "prompt_tokens": n_p, "decode_tokens": n_e, "completion_tokens": n_out,
                "wall_s": wall}

    rows: dict[str, list[dict]] = {"rag": [], "raw": []}
    one("rag"), one("raw")  # warm both
    for i in range(runs):
        for side in (("rag", "raw") if i % 2 == 0 else ("raw", "rag")):
            rows[side].append(one(side))
    out: dict = {"threads": threads, "model": spec.name, "runs": runs,
                 "rag_load_s": round(rag_load, 3), "raw_load_s": round(raw_load, 3),
                 "flash_attn_rag": rag_llm.flash_attn, "flash_attn_raw": False}
    for side, rs in rows.items():
        out[side] = {"prompt_tps": stats([r["prompt_tps"] for r in rs], 1),
                     "decode_tps": stats([r["decode_tps"] for r in rs], 1),
                     "prompt_tokens": rs[0]["prompt_tokens"],
                     "decode_tokens": rs[0]["decode_tokens"]}
    out["ratio_prompt"] = stats([a["prompt_tps"] / b["prompt_tps"]
                                 for a, b in zip(rows["rag"], rows["raw"])])
    out["ratio_decode"] = stats([a["decode_tps"] / b["decode_tps"]
                                 for a, b in zip(rows["rag"], rows["raw"])])
    out["load"] = load()

    # prefix reuse: the next question without reset, over the same passage (a follow-up)
    # and over another passage (only the fixed system prompt is shared)
    out["prefix_reuse"] = {}
    for name, nxt in (("same_passage", follow_up), ("other_passage", new_passage)):
        rag_llama.reset()
        rag_llm.generate("retell", values, max_tokens=4)
        llama_cpp.llama_perf_context_reset(rag_llama.ctx)
        g = rag_llm.generate("retell", nxt, max_tokens=4)
        n_p, *_ = perf(rag_llama)
        out["prefix_reuse"][name] = {"prompt_tokens": g.prompt_tokens, "evaluated": n_p,
                                     "reused": g.prompt_tokens - n_p}
    print(json.dumps(out))


# -- the table -----------------------------------------------------------------------------

def fmt(s: dict | None, unit: str = "", digits: int = 2) -> tuple[str, str]:
    if not s:
        return "-", "-"
    return (f"{s['median']:.{digits}f}{unit}",
            f"{s['min']:.{digits}f}–{s['max']:.{digits}f}{unit}")


def markdown(r: dict) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(name, s, target, met, unit="", digits=2):
        med, rng = fmt(s, unit, digits)
        rows.append((name, med, rng, target, {True: "yes", False: "**no**", None: "-"}[met]))

    def measured_on(step, values):
        m = values.get("machine", {})
        rows.append((f"**{step}**, on {m.get('cpu')} ({m.get('cores')} cores, "
                     f"{m.get('mem_gib')} GiB)", "", "", "", ""))

    ing = r.get("ingest")
    if ing:
        measured_on("ingest", ing)
        add(f"ingest SQuAD ({ing['chunks']} chunks), `rag ingest` s", ing["rag_ingest_s"],
            f"≤ {min(PEER_INGEST_S.values()) / 2:.1f} s (half the best peer)",
            ing["rag_ingest_s"]["median"] <= min(PEER_INGEST_S.values()) / 2, " s", 1)
        add("ingest chunks/s", ing["chunks_per_s"], "", None, "", 1)
        add("ingest tokens/s", ing["tokens_per_s"], "", None, "", 0)
        for prec in ("fp32", "bf16"):
            add(f"bare SentenceTransformer.encode ({prec}), same chunks, s",
                ing[f"bare_encode_{prec}_s"], "", None, " s", 1)
        add(f"ratio rag ingest / bare encode ({ing['rag_precision']}, as rag computes)",
            ing["ratio_rag_over_bare_encode"], "≤ 1.10",
            ing["ratio_rag_over_bare_encode"]["median"] <= 1.10, "×")
        add("ratio rag ingest / bare encode (fp32)", ing["ratio_rag_over_bare_encode_fp32"],
            "", None, "×")
        add("ratio rag ingest / bare encode process (imports + load)",
            ing["ratio_rag_over_bare_process"], "", None, "×")
        if "ratio_rag_over_bare_process_cpu" in ing:
            add("ratio of CPU seconds, rag ingest / bare encode process",
                ing["ratio_rag_over_bare_process_cpu"], "≤ 1.10",
                ing["ratio_rag_over_bare_process_cpu"]["median"] <= 1.10, "×")
        add("ingest peak RSS MiB", ing["peak_rss_mib"], "", None, "", 0)
        for name, speed in ing.get("engines_chunks_per_s", {}).items():
            add(f"  chunks/s on 256 chunks, {name.replace('_', ' ')}", speed, "", None, "", 1)
    ret = r.get("retrieval")
    if ret:
        measured_on("retrieval", ret)
        fs = ret.get("full_search_2k")
        if fs:
            add(f"full `Retriever.search` p50 at {fs['chunks']} chunks (embed + dense + "
                "lexical + sentences + fusion)", fs["p50_ms"],
                f"≤ 5 ms (peers {PEER_QUERY_MS_2K:.0f} ms)",
                fs["p50_ms"]["median"] <= 5, " ms")
            add(f"  of which query embedding ({fs.get('engine', 'numpy')}, "
                f"{fs.get('threads') or 'auto'} threads) p50", fs["embed_query_p50_ms"], "",
                None, " ms")
            if "dense_p50_ms" in fs:
                add("  of which dense search (FAISS, exact) p50",
                    fs["dense_p50_ms"], "", None, " ms", 3)
                if "sentence_dense_p50_ms" in fs:
                    add(f"  of which the candidates' best sentences (of {fs['sentences']:,}, in "
                        "memory) p50", fs["sentence_dense_p50_ms"], "", None, " ms", 3)
                add("  of which BM25 (in memory, FTS5's scores; words read afresh) p50",
                    fs["bm25_p50_ms"], "", None, " ms", 3)
                if "bm25_over_candidates_p50_ms" in fs:
                    add("  of which BM25 over the candidates, idf by how few share a word, p50",
                        fs["bm25_over_candidates_p50_ms"], "", None, " ms", 3)
                if "late_interaction_p50_ms" in fs:
                    add("  late interaction over the candidates, when turned on (token codes "
                        "read from SQLite) p50", fs["late_interaction_p50_ms"], "", None, " ms", 3)
            if "search_without_embedding_p50_ms" in fs:
                add("  the search with the question's vector known (BM25, FAISS, fusion, "
                    "sentence re-ordering) p50", fs["search_without_embedding_p50_ms"], "",
                    None, " ms")
            for name, ms in fs.get("query_engines_one_thread_p50_ms", {}).items():
                add(f"  question embedding alone, one thread, {name.replace('_', ' ')} p50",
                    {"median": ms, "min": ms, "max": ms}, "", None, " ms")
            add("full search p99", fs["p99_ms"], "", None, " ms")
        for row in ret.values():
            if not isinstance(row, dict) or "kind" not in row:
                continue
            n = row["n"]
            target, met = "", None
            if n <= 5000:
                target, met = "≤ 5 ms", row["p50_ms"]["median"] <= 5
            elif n >= 1_000_000:
                target = "≤ 20 ms, recall ≥ 0.95, ≤ 2 GB"
                met = (row["p50_ms"]["median"] <= 20 and row["recall_at_10"] >= 0.95
                       and row["index_file_mib"] <= 2048)
            label = "real" if n <= 5000 else "synthetic"
            extra = f", nprobe {row['nprobe']}/{row['nlist']}" if "nprobe" in row else ""
            add(f"index search p50 at {n:,} ({label}; {row['kind']}{extra}; recall@10 "
                f"{row['recall_at_10']:.3f}; {row['index_file_mib']} MiB)", row["p50_ms"],
                target, met, " ms", 3)
            add(f"index search p99 at {n:,}", row["p99_ms"], "", None, " ms", 3)
    gen = r.get("generation")
    if gen:
        measured_on("generation", gen)
        add(f"prompt tokens/s, rag ({gen['threads']} threads)", gen["rag"]["prompt_tps"], "",
            None, "", 1)
        add("prompt tokens/s, raw llama-cpp-python", gen["raw"]["prompt_tps"], "", None, "", 1)
        add("decode tokens/s, rag", gen["rag"]["decode_tps"], "≤ 270 (memory bound)", None,
            "", 1)
        add("decode tokens/s, raw llama-cpp-python", gen["raw"]["decode_tps"], "", None, "", 1)
        add("ratio rag / raw, prompt", gen["ratio_prompt"], "≥ 0.95",
            gen["ratio_prompt"]["median"] >= 0.95, "×")
        add("ratio rag / raw, decode", gen["ratio_decode"], "≥ 0.95",
            gen["ratio_decode"]["median"] >= 0.95, "×")
    st = r.get("startup")
    if st:
        measured_on("startup", st)
        add("`rag --help` s", st["help_s"], "≤ 0.3 s", st["help_s"]["median"] <= 0.3, " s")
        add("`rag --help` CPU s (user + system)", st.get("help_cpu_s"), "", None, " s")
        add("cold `rag ask` on seeds s (separate processes)", st["cold_ask_s"], "≤ 8 s",
            st["cold_ask_s"]["median"] <= 8, " s")
        add("cold `rag ask` CPU s (user + system)", st.get("cold_ask_cpu_s"), "", None, " s")
        add("warm ask (next question, same process) s", st["warm_ask_s"], "≤ 3 s",
            st["warm_ask_s"]["median"] <= 3, " s")
        add("cold ask peak RSS MiB", st["cold_ask_peak_rss_mib"], "", None, "", 0)
        add("`rag ingest seeds` s", st["seeds_ingest_s"], "", None, " s")
        add("`rag ingest seeds` peak RSS MiB", st["seeds_ingest_peak_rss_mib"], "", None, "", 0)
    head = ("# Performance (bench/perf.py)\n\nEach step names the machine it was measured on, "
            "shared with other work (load averages in results.json). Median of the runs, "
            "min–max beside it; ratios are taken run by run in the same run.\n\n")
    lines = ["| figure | median | min–max | target | met? |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        what, args = sys.argv[1], sys.argv[2:]
        {"_warm": lambda: warm_child(args[0], int(args[1])),
         "_encode": lambda: encode_child(args[0], int(args[1]), args[2]),
         "_engines": lambda: engines_child(args[0], int(args[1])),
         "_search": lambda: search_child(args[0], int(args[1])),
         "_generation": lambda: generation_child(int(args[0]), int(args[1]))}[what]()
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default=",".join(STEPS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ingest-runs", type=int, default=None,
                   help="runs of the SQuAD ingest pair (default: --runs)")
    p.add_argument("--threads", type=int, default=2, help="for the same-thread comparisons")
    p.add_argument("--sizes", default="2000,100000,1000000",
                   help="retrieval sizes (the real SQuAD chunks stand for the smallest)")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    for step in args.steps.split(","):
        t0 = time.perf_counter()
        log(f"== {step} (load {load()})")
        if step == "startup":
            res = step_startup(args.runs)
        elif step == "ingest":
            res = step_ingest(args.ingest_runs or args.runs, args.threads)
        elif step == "retrieval":
            res = step_retrieval(args.runs, [int(s) for s in args.sizes.split(",")], args.threads)
        elif step == "generation":
            res = step_generation(max(args.runs, 7), args.threads)
        else:
            raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
        res["step_s"] = round(time.perf_counter() - t0, 1)
        res["load_at_end"] = load()
        save(step, res)
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
