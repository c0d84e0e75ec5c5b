"""Multi-News: ROUGE of `rag brief` against the human summaries, next to two baselines.

For each cluster of ../shared/data/multinews/multinews_representative.jsonl (evaluation only:
read in place, never copied into the repository) the articles (separated by `|||||`) are
written to a temporary folder and indexed, and three summaries are scored against
`reference` with ROUGE-1/2/L F1 (Google's rouge-score, Porter stemming):

  briefing  the points of `rag brief` over that index (citation markers removed)
  lead-3    the first three sentences of each article
  naive     the same generative model as `rag ask` given the articles in its prompt
            (prompts/naive.*), truncated so that prompt plus summary fit its n_ctx

    .venv/bin/python -m bench.briefing            # all 100 clusters, ~1 hour on 2 cores
    .venv/bin/python -m bench.briefing --limit 5 --systems briefing,lead3

Writes bench/results_briefing.json (means and every cluster's scores) and
bench/results_briefing.md (the table, with run time). Progress goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rag import brief
from rag.chunking import split_sentences
from rag.citations import strip_markers
from rag.config import PROJECT_ROOT, Settings

DATA = PROJECT_ROOT.parent / "shared" / "data" / "multinews" / "multinews_representative.jsonl"
OUT = PROJECT_ROOT / "bench"
SYSTEMS = ("briefing", "lead3", "naive")
METRICS = ("rouge1", "rouge2", "rougeL")
NAIVE_QUESTION = "Write a summary of the news reported in these articles."
NAIVE_MAX_TOKENS = 320  # the references run ~230 words


def articles(row: dict) -> list[str]:
    """The cluster's articles; an article repeated word for word is kept once."""
    return list(dict.fromkeys(d.strip() for d in row["document"].split("|||||") if d.strip()))


def lead3(docs: list[str]) -> str:
    return " ".join(" ".join(d[a:b] for a, b in split_sentences(d)[:3]) for d in docs)


def briefing(docs: list[str], settings: Settings, workdir: Path, max_points: int,
             max_words: int) -> tuple[str, dict]:
    from rag.ingest import ingest

    folder = workdir / "docs"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(d + "\n", encoding="utf-8")
    cluster = settings.with_(index_dir=workdir / "index")
    report = ingest([str(folder)], cluster)
    b = brief.build(cluster, max_points=max_points, max_words=max_words)
    text = "\n".join(strip_markers(p.text) for p in b.points)
    return text, {"points": len(b.points), "conflicts": len(b.conflicts),
                  "merged": sum(p.n_sources > 1 for p in b.points),
                  "indexed": len(report.added), "refused": len(report.refused)}


class Naive:
    """The documents in the prompt, cut to what fits the model's context."""

    def __init__(self, settings: Settings):
        from rag.llm import get_llm
        from rag.registry import resolve_llm

        self.llm = get_llm(resolve_llm(settings.model, settings), settings)

    def budget(self) -> int:
        from rag import prompts

        pdir = self.llm.settings.prompts_dir
        values = {"passages": "", "question": NAIVE_QUESTION}
        frame = "\n".join(prompts.render_file(pdir, f"naive.{part}.txt", values)
                          for part in (("system", "user") if self.llm.chat else ("completion",)))
        # the chat template's own tokens and the BOS are not in the rendered text: keep a margin
        return self.llm.n_ctx - NAIVE_MAX_TOKENS - self.llm.count_tokens(frame) - 64

    def fit(self, text: str, budget: int) -> str:
        """The longest run of whole words from the start of text within budget tokens."""
        text = text[:budget * 8]  # tokens average well under 8 characters
        if self.llm.count_tokens(text) <= budget:
            return text
        cuts = [m.start() for m in re.finditer(r"\s+", text)]
        lo, hi = 0, len(cuts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.llm.count_tokens(text[:cuts[mid]]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return text[:cuts[lo]]

    def __call__(self, docs: list[str]) -> tuple[str, dict]:
        text = self.fit("\n\n".join(docs), self.budget())
        gen = self.llm.generate("naive", {"passages": text, "question": NAIVE_QUESTION},
                                max_tokens=NAIVE_MAX_TOKENS)
        return gen.text, {"prompt_tokens": gen.prompt_tokens,
                          "truncated": len(text) < sum(len(d) + 2 for d in docs) - 2,
                          "completion_tokens": gen.completion_tokens}


def scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)


def _mean(rows: list[dict], system: str, metric: str) -> float:
    return round(100 * statistics.fmean(r[system][metric] for r in rows), 2)


def summarise(rows: list[dict], systems: list[str]) -> dict:
    out = {}
    for s in systems:
        out[s] = {m: _mean(rows, s, m) for m in METRICS}
        out[s]["words"] = round(statistics.fmean(r[s]["words"] for r in rows), 1)
        out[s]["seconds"] = round(sum(r[s]["seconds"] for r in rows), 1)
    return out


class _Worker:
    """Scores clusters; one per process, holding the models once."""

    def __init__(self, systems: list[str], max_points: int, max_words: int, threads: int):
        self.systems, self.max_points, self.max_words = systems, max_points, max_words
        self.settings = Settings.from_env(n_threads=threads)
        self.rouge = scorer()
        self.naive = Naive(self.settings) if "naive" in systems else None

    def __call__(self, row: dict) -> dict:
        docs = articles(row)
        item: dict = {"id": row["id"], "articles": len(docs),
                      "words": len(row["document"].split())}
        for system in self.systems:
            t0 = time.perf_counter()
            info: dict = {}
            if system == "briefing":
                with tempfile.TemporaryDirectory(prefix="rag-briefing-") as tmp:
                    summary, info = briefing(docs, self.settings, Path(tmp), self.max_points,
                                             self.max_words)
            elif system == "lead3":
                summary = lead3(docs)
            else:
                summary, info = self.naive(docs)
            scores = self.rouge.score(row["reference"], summary)
            item[system] = {m: round(scores[m].fmeasure, 4) for m in METRICS} | {
                "words": len(summary.split()), "seconds": round(time.perf_counter() - t0, 2),
                **info}
        return item


_worker: _Worker | None = None


def _init(*args) -> None:
    global _worker
    _worker = _Worker(*args)


def _score(row: dict) -> dict:
    assert _worker is not None
    return _worker(row)


def run(data: Path, limit: int | None, systems: list[str], max_points: int, max_words: int,
        threads: int, jobs: int = 1, log=sys.stderr,
        on_item: Callable[[dict], None] | None = None) -> dict:
    """Every cluster through every system; jobs > 1 shares the clusters among processes.
    on_item sees the summary so far after each cluster (to save partial results)."""
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()
            if line.strip()][:limit]
    args = (systems, max_points, max_words, threads)
    results: list[dict] = []
    t_start = time.perf_counter()

    def report(item: dict) -> dict:
        results.append(item)
        elapsed = time.perf_counter() - t_start
        line = "  ".join(f"{s} R2 {_mean(results, s, 'rouge2'):5.2f}" for s in systems)
        print(f"[{len(results)}/{len(rows)}] {item['id']:<16} {elapsed:7.0f}s  {line}",
              file=log, flush=True)
        res = _summary(results, rows, systems, args, time.perf_counter() - t_start, jobs)
        if on_item:
            on_item(res)
        return res

    res = _summary([], rows, systems, args, 0.0, jobs)
    if jobs <= 1:
        _init(*args)
        for row in rows:
            res = report(_score(row))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs, initializer=_init, initargs=args) as pool:
            for item in pool.imap(_score, rows):
                res = report(item)
    return res


def _summary(results: list[dict], rows: list[dict], systems: list[str], args: tuple,
             seconds: float, jobs: int) -> dict:
    from rag.registry import resolve_llm

    _, max_points, max_words, threads = args
    settings = Settings.from_env(n_threads=threads)
    first_ids = {r["id"] for r in rows[:len(rows) // 2]}
    first = [r for r in results if r["id"] in first_ids]
    second = [r for r in results if r["id"] not in first_ids]
    return {
        "data": DATA.name,
        "clusters": len(results), "of": len(rows), "complete": len(results) == len(rows),
        "max_points": max_points, "max_words": max_words,
        "model": resolve_llm(settings.model, settings).name if "naive" in systems else None,
        "n_ctx": settings.n_ctx, "threads": threads, "jobs": jobs, "machine": platform.machine(),
        "run_time_s": round(seconds, 1),
        "mean": summarise(results, systems) if results else {},
        # the briefing's weights were tuned on the first half: the second is held out
        "first_half": summarise(first, systems) if first else {},
        "second_half": summarise(second, systems) if second else {},
        "items": results,
    }


def markdown(res: dict) -> str:
    names = {"briefing": "`rag brief` (extractive, cited)", "lead3": "lead-3 (3 first sentences"
             " of each article)", "naive": f"naive: articles in the prompt of {res['model']}"
             f" (n_ctx {res['n_ctx']})"}
    lines = [
        "# Multi-News: briefing ROUGE against the human summaries", "",
        ("" if res["complete"] else f"**Partial run: {res['clusters']} of {res['of']} clusters "
         "scored when it was stopped.** ")
        + f"{res['clusters']} clusters of `{res['data']}`; ROUGE F1 ×100 (rouge-score, Porter "
        f"stemming); `rag brief --max-points {res['max_points']} --max-words "
        f"{res['max_words']}` (the defaults). Run time "
        f"{res['run_time_s'] / 60:.1f} min, {res['jobs']} process(es) of {res['threads']} "
        f"thread(s) each ({res['machine']}, a 2-core machine shared with other work).", "",
        "| system | ROUGE-1 | ROUGE-2 | ROUGE-L | words | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, m in res["mean"].items():
        lines.append(f"| {names[s]} | {m['rouge1']:.2f} | {m['rouge2']:.2f} | "
                     f"{m['rougeL']:.2f} | {m['words']:.0f} | {m['seconds']:.0f} |")
    if res.get("second_half"):
        lines += ["", "Held out (the second half of the clusters; the briefing's sentence-choice "
                  "weights were tuned on the first half):", "",
                  "| system | ROUGE-1 | ROUGE-2 | ROUGE-L |", "| --- | ---: | ---: | ---: |"]
        for s, m in res["second_half"].items():
            lines.append(f"| {s} | {m['rouge1']:.2f} | {m['rouge2']:.2f} | {m['rougeL']:.2f} |")
    lines += ["", "Reproduce: `.venv/bin/python -m bench.briefing` (writes this file and "
              "`results_briefing.json`, with every cluster's scores).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=None, help="only the first N clusters")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--max-points", type=int, default=12)
    ap.add_argument("--max-words", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for the models (1 is fastest on a shared machine)")
    ap.add_argument("--jobs", type=int, default=1, help="clusters scored in parallel processes")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the results files")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"{args.data} not found: put the Multi-News sample under ../shared/data/",
              file=sys.stderr)
        return 1
    systems = [s for s in args.systems.split(",") if s]
    if unknown := set(systems) - set(SYSTEMS):
        print(f"unknown systems {sorted(unknown)}: choose from {SYSTEMS}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    def save(res: dict) -> None:
        (args.out / "results_briefing.json").write_text(json.dumps(res, indent=1) + "\n")
        (args.out / "results_briefing.md").write_text(markdown(res))

    res = run(args.data, args.limit, systems, args.max_points, args.max_words, args.threads,
              args.jobs, on_item=save)
    save(res)
    print(re.sub(r"\n\n+", "\n", markdown(res)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
