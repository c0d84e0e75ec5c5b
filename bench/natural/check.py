#!/usr/bin/env python3
"""Validate a natural-question set against its fetched documents.

Checks the schema of every line, that the ids are one lower-case letter and a
number running from 001 in file order (n001... for bench/natural, c001... for
bench/calibration), counts items per kind (and against the minimum mix the
set promises), that every answerable item has an accepted answer that occurs
(after case/punctuation/whitespace folding, on word boundaries, as rag's
evaluator matches) in one of its source documents, that every `sources` stem
names a fetched document, and that every `follows` points at the item
immediately before it.

Usage: python3 bench/natural/check.py [questions.jsonl] [docs-dir]
Without arguments it checks bench/natural/questions.jsonl against
bench/work/natural/docs. For the calibration set:
    python3 bench/natural/check.py bench/calibration/questions.jsonl bench/work/calibration/docs
Stdlib only. Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_QUESTIONS = HERE / "questions.jsonl"
DEFAULT_DOCS = ROOT / "bench" / "work" / "natural" / "docs"

KINDS = ("who", "why", "how", "what-did", "when", "where", "how-many", "yesno",
         "list", "instruction", "fragment", "followup", "unanswerable")
MINIMUM = {"who": 8, "why": 8, "how": 8, "what-did": 8, "fragment": 8, "yesno": 6,
           "list": 5, "instruction": 6, "followup": 8, "unanswerable": 20}
FIELDS = {"id": str, "question": str, "answers": list, "sources": list,
          "unanswerable": bool, "kind": str, "tempting": bool, "follows": (str, type(None))}
PUNCT = set(string.punctuation) | set("“”‘’–—")
ID_RE = re.compile(r"[a-z][0-9]{3,}")


def fold(text: str) -> str:
    text = text.lower()
    text = "".join(" " if ch in PUNCT else ch for ch in text)
    return " ".join(text.split())


def main(argv: list[str]) -> int:
    qpath = Path(argv[1]) if len(argv) > 1 else DEFAULT_QUESTIONS
    ddir = Path(argv[2]) if len(argv) > 2 else DEFAULT_DOCS
    errors: list[str] = []
    if not ddir.is_dir() or not any(ddir.glob("*.txt")):
        print(f"no documents in {ddir}: run the set's fetch_docs.sh first"
              " (bash bench/natural/fetch_docs.sh for the default set)")
        return 1
    docs = {p.stem: " " + fold(p.read_text(encoding="utf-8")) + " "
            for p in sorted(ddir.glob("*.txt"))}

    items = []
    for n, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            errors.append(f"line {n}: empty line")
            continue
        try:
            items.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(f"line {n}: bad JSON: {exc}")

    seen: set[str] = set()
    kinds: Counter[str] = Counter()
    tempting = 0
    prev_id = None
    prefix = None
    for pos, (n, q) in enumerate(items, 1):
        where = f"line {n} ({q.get('id', '?')})"
        if set(q) != set(FIELDS):
            errors.append(f"{where}: fields {sorted(q)} != {sorted(FIELDS)}")
            prev_id = q.get("id")
            continue
        bad = [k for k, t in FIELDS.items() if not isinstance(q[k], t)]
        if bad:
            errors.append(f"{where}: wrong type for {bad}")
            prev_id = q.get("id")
            continue
        qid = q["id"]
        if qid in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(qid)
        if not ID_RE.fullmatch(qid):
            errors.append(f"{where}: id is not a lower-case letter and a number, like n001")
        else:
            prefix = prefix or qid[0]
            if qid[0] != prefix or int(qid[1:]) != pos:
                errors.append(f"{where}: id out of sequence, want {prefix}{pos:03d}")
        if not q["question"].strip():
            errors.append(f"{where}: empty question")
        if q["kind"] not in KINDS:
            errors.append(f"{where}: unknown kind {q['kind']!r}")
        kinds[q["kind"]] += 1
        if not all(isinstance(a, str) and fold(a) for a in q["answers"]):
            errors.append(f"{where}: answers must be non-empty strings")
        if not all(isinstance(s, str) for s in q["sources"]):
            errors.append(f"{where}: sources must be strings")
        if (q["kind"] == "unanswerable") != q["unanswerable"]:
            errors.append(f"{where}: kind 'unanswerable' and unanswerable flag disagree")
        if q["tempting"] and not q["unanswerable"]:
            errors.append(f"{where}: tempting is only for unanswerable items")
        if q["unanswerable"]:
            tempting += q["tempting"]
            if q["answers"] or q["sources"]:
                errors.append(f"{where}: unanswerable items have no answers or sources")
        else:
            if not q["answers"] or not q["sources"]:
                errors.append(f"{where}: answerable item needs answers and sources")
            missing = [s for s in q["sources"] if s not in docs]
            if missing:
                errors.append(f"{where}: unknown source doc(s) {missing}")
            texts = [docs[s] for s in q["sources"] if s in docs]
            answers = q["answers"]
            if q["kind"] == "yesno":
                if not answers or fold(answers[0]) not in ("yes", "no"):
                    errors.append(f"{where}: a yesno item's first answer is 'yes' or 'no'")
                # "yes"/"no" cannot be found in a text; check the key fact words, if any
                answers = [a for a in answers if fold(a) not in ("yes", "no")]
            if texts and answers and not any(f" {fold(a)} " in t for a in answers for t in texts):
                errors.append(f"{where}: no answer of {answers} occurs in {q['sources']}")
            echoed = [a for a in q["answers"] if f" {fold(a)} " in f" {fold(q['question'])} "]
            if echoed:
                errors.append(f"{where}: answer(s) {echoed} already occur in the question")
        if q["kind"] == "followup":
            if q["follows"] is None or q["follows"] != prev_id:
                errors.append(f"{where}: follows={q['follows']!r} but previous item is {prev_id!r}")
        elif q["follows"] is not None:
            errors.append(f"{where}: follows is set but kind is {q['kind']!r}")
        if q["kind"] == "instruction" and not 2 <= len(q["answers"]) <= 4:
            errors.append(f"{where}: instruction items list 2-4 key terms")
        prev_id = qid

    unans = kinds["unanswerable"]
    for kind, low in MINIMUM.items():
        if kinds[kind] < low:
            errors.append(f"kind {kind}: {kinds[kind]} items, want at least {low}")
    if len(items) < 100:
        errors.append(f"{len(items)} items, want at least 100")
    if tempting * 2 < unans:
        errors.append(f"only {tempting} of {unans} unanswerable items are tempting, want half")

    print(f"{len(items)} items over {len(docs)} documents ({ddir})")
    print("per kind: " + ", ".join(f"{k}={kinds[k]}" for k in KINDS if kinds[k]))
    print(f"unanswerable: {unans} ({tempting} tempting)")
    for e in errors:
        print("FAIL", e)
    print("OK" if not errors else f"{len(errors)} problem(s)")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
