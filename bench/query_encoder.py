"""Query encoder (issue #8): the numpy MiniLM (rag/minilm.py) against the same weights run by
llama.cpp (bench/gguf_minilm.py), in one process, one thread each, alternating per query.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/query_encoder.py
    .venv/bin/python bench/query_encoder.py --n 200 --passages 50 --dtypes f32,f16,bf16,q8_0

Agreement: cosine of each llama.cpp vector (F32, F16, BF16, Q8_0 weights; F32 with flash
attention) to the numpy one (itself sentence-transformers' to float32 rounding,
tests/test_minilm.py) over SQuAD dev questions (odd-numbered, as bench/squad.py reports) and
SQuAD paragraphs cut at 250 tokens.
Latency: `encode([question])` (tokenization included) per question, p50/p99, the encoders taking
turns on each question so load changes hit all of them alike; then a 250-token passage.
Cold start: fresh interpreters timing import + load + first query (GGUF already cached), and the
GGUF build itself. Results (numbers only): bench/results_query_encoder.json.
The GGUF files are written under a temporary directory, never into the repository.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.squad import load_squad  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.registry import resolve_embedding  # noqa: E402

RESULTS = ROOT / "bench" / "results_query_encoder.json"
PY = sys.executable
PASSAGE_TOKENS = 250
COLD_QUESTION = "How many North Korean personnel have been deployed to Russia?"


def model_path() -> Path:
    return resolve_embedding("all-minilm-l6-v2", Settings.from_env()).path


def texts(n_questions: int, n_passages: int, tokenizer) -> tuple[list[str], list[str]]:
    paragraphs, questions = load_squad()
    qs = [q["question"] for q in questions[1::2][:n_questions]]
    # paragraphs spread over the whole dev set, each cut after its 250th word-piece
    step = max(1, len(paragraphs) // n_passages)
    passages = []
    for _, text in paragraphs[::step][:n_passages]:
        enc = tokenizer.encode(text, add_special_tokens=False)
        if len(enc.ids) > PASSAGE_TOKENS:
            text = text[:enc.offsets[PASSAGE_TOKENS - 1][1]]
        passages.append(text)
    return qs, passages


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(c.min()), 7), "mean": round(float(c.mean()), 7),
            "below_0_9999": int((c < 0.9999).sum())}


def pct(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


COLD_NUMPY = """
import time; t0 = time.perf_counter()
from pathlib import Path
from rag.minilm import MiniLM, set_blas_threads
set_blas_threads(1); t1 = time.perf_counter()
m = MiniLM(Path({path!r})); t2 = time.perf_counter()
m.encode([{question!r}]); t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""

COLD_GGUF = """
import time; t0 = time.perf_counter()
from pathlib import Path
{preload}
t0b = time.perf_counter()
from bench.gguf_minilm import GGUFMiniLM
import llama_cpp; t1 = time.perf_counter()
m = GGUFMiniLM(Path({path!r})); t2 = time.perf_counter()
m.encode([{question!r}]); t3 = time.perf_counter()
print(t1 - t0b, t2 - t1, t3 - t2)
"""


def cold_start(path: Path, tmp: Path, runs: int) -> dict:
    """Fresh interpreters; the llama.cpp side finds its GGUF through the cache (XDG_CACHE_HOME
    under tmp), already written, except "llama_cpp_first_use" whose cache starts empty."""
    from bench.gguf_minilm import ensure_gguf

    cached = tmp / "xdg-cached"
    ensure_gguf(path, "f32", cached / "rag" / "gguf")

    def run(code: str, xdg: Path) -> list[float]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(xdg)}
        out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True,
                             check=True, cwd=ROOT)
        return [float(x) * 1000 for x in out.stdout.split()]

    gguf_code = COLD_GGUF.format(path=str(path), preload="", question=COLD_QUESTION)
    sides = {
        "numpy": COLD_NUMPY.format(path=str(path), question=COLD_QUESTION),
        "llama_cpp": gguf_code,
        # what `rag ask` pays when the LLM's llama_cpp import has already happened
        "llama_cpp_after_llm_import": COLD_GGUF.format(path=str(path),
                                                       preload="import llama_cpp.llama",
                                                       question=COLD_QUESTION),
        "llama_cpp_first_use": gguf_code,  # load_ms includes writing the GGUF
    }
    samples: dict[str, list[list[float]]] = {k: [] for k in sides}
    for r in range(runs):
        for name, code in sides.items():
            xdg = tmp / f"xdg-empty-{r}" if name.endswith("first_use") else cached
            samples[name].append(run(code, xdg))
    out = {}
    for name, rows in samples.items():
        med = np.median(np.asarray(rows), axis=0)
        out[name] = {"import_ms": round(float(med[0]), 1), "load_ms": round(float(med[1]), 1),
                     "first_query_ms": round(float(med[2]), 1),
                     "total_ms": round(float(med.sum()), 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="SQuAD questions")
    ap.add_argument("--passages", type=int, default=50)
    ap.add_argument("--dtypes", default="f32,f16,bf16,q8_0")
    ap.add_argument("--timed", default="f32,f16,bf16,q8_0,f32_flash_attn",
                    help="llama.cpp variants in the latency race")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the questions")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from bench.gguf_minilm import GGUFMiniLM, build_gguf
    from rag.minilm import MiniLM, set_blas_threads

    set_blas_threads(1)
    path = model_path()
    dtypes = args.dtypes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="rag-gguf-"))
    results: dict = {"n_questions": args.n, "n_passages": args.passages, "threads": 1,
                     "passage_tokens": PASSAGE_TOKENS}

    build, size, ggufs = {}, {}, {}
    for dt in dtypes:
        t0 = time.perf_counter()
        ggufs[dt] = build_gguf(path, tmp / f"minilm-{dt}.gguf", dt)
        build[dt] = round((time.perf_counter() - t0) * 1000, 1)
        size[dt] = ggufs[dt].stat().st_size
    # deterministic: the same weights give the same bytes
    again = build_gguf(path, tmp / "again.gguf", "f32")
    results["gguf_deterministic"] = int(again.read_bytes() == ggufs["f32"].read_bytes())
    again.unlink()
    results["gguf_build_ms"] = build
    results["gguf_bytes"] = size

    numpy_enc = MiniLM(path)
    # every dtype without flash attention, and F32 with it
    variants = [(dt, dt, False) for dt in dtypes] + [("f32_flash_attn", "f32", True)]
    encoders = {}
    load_ms = {}
    for name, dt, fa in variants:
        t0 = time.perf_counter()
        encoders[name] = GGUFMiniLM(path, gguf=ggufs[dt], threads=1, flash_attn=fa)
        load_ms[name] = round((time.perf_counter() - t0) * 1000, 1)
    results["in_process_load_ms"] = load_ms

    qs, passages = texts(args.n, args.passages, numpy_enc.tokenizer)
    results["question_tokens_mean"] = round(
        float(np.mean([len(numpy_enc.tokenizer.encode(q).ids) for q in qs])), 1)
    results["passage_tokens_mean"] = round(
        float(np.mean([len(numpy_enc.tokenizer.encode(p).ids) for p in passages])), 1)
    ref_q, ref_p = numpy_enc.encode(qs), numpy_enc.encode(passages)
    agreement = {}
    for dt, enc in encoders.items():
        agreement[dt] = {"questions": cosines(enc.encode(qs), ref_q),
                         "passages": cosines(enc.encode(passages), ref_p)}
    results["cosine_to_numpy"] = agreement

    # latency: one question at a time, every encoder on each question in rotating order
    timed = {"numpy": numpy_enc, **{f"llama_{v}": encoders[v] for v in args.timed.split(",")}}
    names = list(timed)
    for enc in timed.values():  # warm-up
        for q in qs[:10]:
            enc.encode([q])
    ms: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeat):
        for i, q in enumerate(qs):
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                timed[name].encode([q])
                ms[name].append((time.perf_counter() - t0) * 1000)
    results["query_latency"] = {k: pct(v) for k, v in ms.items()}
    results["query_speedup_p50"] = {
        k: round(results["query_latency"]["numpy"]["p50_ms"] / v["p50_ms"], 2)
        for k, v in results["query_latency"].items() if k != "numpy"}

    pms: dict[str, list[float]] = {k: [] for k in names}
    for i, p in enumerate(passages[:20]):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            timed[name].encode([p])
            pms[name].append((time.perf_counter() - t0) * 1000)
    results["passage_latency"] = {k: pct(v) for k, v in pms.items()}

    for enc in encoders.values():
        enc.close()
    results["cold_start"] = cold_start(path, tmp, args.cold_runs)
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(tmp)

    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
