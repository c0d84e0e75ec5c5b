"""Ingest encoder precision: the bulk embedding that dominates `rag ingest`, run by
sentence-transformers in float32, in bfloat16 autocast (what rag uses where the CPU has
AVX512-BF16) and with torch's dynamic int8 quantisation of every Linear layer (VNNI kernels).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/ingest_encoder.py [--n 1000 --runs 3]

The texts are the first n chunks of the SQuAD index bench/squad.py builds (run its `prepare`
first); every variant encodes the same texts in batches of 64 with two threads, taking turns run
by run so load changes hit them alike. Agreement is the cosine of each vector to the float32 one
(min and mean). Results (numbers only): bench/results_ingest_encoder.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402
from rag.registry import resolve_embedding  # noqa: E402

INDEX = ROOT / "bench" / "work" / "squad" / "index" / "rag.sqlite"
RESULTS = ROOT / "bench" / "results_ingest_encoder.json"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if not INDEX.exists():
        sys.exit(f"bench: no SQuAD index at {INDEX}: run `bench/squad.py prepare` first")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    db = sqlite3.connect(f"file:{INDEX}?mode=ro", uri=True)
    texts = [r[0] for r in db.execute("SELECT text FROM chunks ORDER BY rowid LIMIT ?",
                                      (args.n,))]
    db.close()
    spec = resolve_embedding("all-minilm-l6-v2", Settings())
    model = SentenceTransformer(str(spec.path), device="cpu")
    int8 = torch.ao.quantization.quantize_dynamic(
        SentenceTransformer(str(spec.path), device="cpu"), {torch.nn.Linear}, dtype=torch.qint8)
    variants = {
        "fp32": (model, contextlib.nullcontext),
        "bf16_autocast": (model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "int8_dynamic": (int8, contextlib.nullcontext),
    }

    def encode(name: str) -> tuple[float, np.ndarray]:
        m, ctx = variants[name]
        t0 = time.perf_counter()
        with ctx():
            v = m.encode(texts, batch_size=64, convert_to_numpy=True)
        dt = time.perf_counter() - t0
        v = v.astype(np.float32)
        return dt, v / np.linalg.norm(v, axis=1, keepdims=True)

    for name in variants:  # warm each once
        encode(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.runs):
        for name in variants:
            dt, vectors[name] = encode(name)
            times[name].append(dt)
    out = {"n_texts": len(texts), "threads": 2, "runs": args.runs,
           "engine": torch.backends.quantized.engine}
    for name in variants:
        cos = (vectors[name] * vectors["fp32"]).sum(1)
        out[name] = {"s_median": round(statistics.median(times[name]), 2),
                     "s_min": round(min(times[name]), 2), "s_max": round(max(times[name]), 2),
                     "cosine_to_fp32_min": round(float(cos.min()), 5),
                     "cosine_to_fp32_mean": round(float(cos.mean()), 5)}
    out["ratio_int8_over_bf16"] = round(out["int8_dynamic"]["s_median"] /
                                        out["bf16_autocast"]["s_median"], 3)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
