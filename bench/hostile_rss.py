"""Peak memory and time of `rag ingest` on large and hostile inputs, each in a fresh process.

    .venv/bin/python bench/hostile_rss.py [--out bench/results_hostile_rss.json]

Cases: the whole hostile corpus of tests/test_hostile.py; a 100 MB text file alone (refused by
its size, before it is read); a 30 MB text file (just under the 32 MB limit); a 10 MB file
that is one line; a 1 MB line of random base64 with no space at all (cut by characters;
every chunk unique, so it is embedding-bound).
Repetitive text keeps embedding short: what is measured is reading, decoding, chunking and
writing, whose memory grows with the file; embedding memory is one batch whatever the size.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.make_docs import GOOD_TEXT, big_text_file, build_hostile_corpus  # noqa: E402

WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "sys.stderr.write(f'\\npeak-rss-kib {resource.getrusage("
           "resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); sys.exit(r.returncode)")


def measure(paths: list[Path], index: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "rag", "ingest",
                           *map(str, paths), "--index", str(index), "--json"],
                          capture_output=True, text=True, env=dict(os.environ, RAG_THREADS="2"))
    seconds = time.perf_counter() - t0
    peak = int(re.search(r"peak-rss-kib (\d+)", proc.stderr).group(1)) // 1024
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return {"exit": proc.returncode, "peak_rss_mib": peak, "seconds": round(seconds, 1),
            "n_chunks": report.get("n_chunks"),
            "refused": [f"{Path(r['path']).name}: {r['reason']}"
                        for r in report.get("refused", [])]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_hostile_corpus(tmp / "hostile")
        huge = tmp / "huge.txt"
        big_text_file(huge, 100 * 10**6)
        near_limit = tmp / "thirty.txt"
        big_text_file(near_limit, 30 * 10**6, line=GOOD_TEXT + "\n")
        one_line = tmp / "one_line.txt"
        big_text_file(one_line, 10 * 10**6, line=GOOD_TEXT + " ")
        blob = tmp / "blob.md"
        blob.write_text(base64.b64encode(os.urandom(750_000)).decode())
        cases = {"baseline: seeds/ (3 small articles)": [ROOT / "seeds"],
                 "hostile corpus (tests/make_docs.py)": [tmp / "hostile"],
                 "100 MB text file": [huge], "30 MB text file": [near_limit],
                 "10 MB single line": [one_line], "1 MB base64, no spaces": [blob]}
        for i, (name, paths) in enumerate(cases.items()):
            results[name] = measure(paths, tmp / f"index{i}")
            print(f"{name:40} {json.dumps(results[name])}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
