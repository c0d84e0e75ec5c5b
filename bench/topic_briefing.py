"""How many retrieved passages should a topic's briefing read? Each SQuAD question of the tuning
split (even-numbered) is taken as the topic of a five-point briefing over all of SQuAD dev's
paragraphs (the index bench/squad.py builds); counted: the briefings whose points hold one of
the question's answers.

    .venv/bin/python bench/topic_briefing.py [--n 300] [--passages 40,20,10,5,3] [--split odd]

(--split odd: the held-out questions, to measure what was tuned on the even ones.)

Prints one line a passage count, and the CPU it ran on. The data is read from
../shared/data/squad and never copied into the repository."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--passages", default="40,20,10,5,3")
    p.add_argument("--split", choices=["even", "odd"], default="even")
    args = p.parse_args()
    from bench.machine import cpu_name
    from bench.squad import WORK, load_squad, prepare, split
    from rag import brief
    from rag.evaluate import contains_answer

    paragraphs, questions = load_squad()
    settings = Settings.from_env(index_dir=WORK / "index")
    if not (settings.index_dir / "rag.sqlite").exists():
        prepare(settings, paragraphs)
    qs = split(questions, args.split, args.n)
    print(f"{len(qs)} {args.split} questions as topics, five points each; {cpu_name()}")
    for passages in (int(x) for x in args.passages.split(",")):
        t0 = time.perf_counter()
        held = sum(contains_answer(" ".join(pt.text for pt in brief.build(
            settings, q["question"], max_points=5, passages=passages).points),
            tuple(q["answers"])) for q in qs)
        print(f"{passages:>3} passages: answer in the briefing {held / len(qs):.3f} "
              f"({(time.perf_counter() - t0) / len(qs):.2f} s a briefing)", flush=True)


if __name__ == "__main__":
    main()
