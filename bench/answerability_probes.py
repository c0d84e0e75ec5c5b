"""Three probes for a better answerability signal on typed questions, on the two development
sets (bench/calibration, bench/calibration_kernel), the shipped reader reading them as
`rag ask` does (requests, yes/no questions and follow-ups left out):

1. the MiniLM cosine between the question and the sentence that holds the best span;
2. how much of the question's idf (over the set's paragraphs) the best span's passage holds,
   and the idf of the rarest question word it lacks;
3. the logistic model over the eleven shipped features with and without the probes beside
   them, fitted on one development set and measured on the other (SQuAD's cached rows do not
   hold the probes);
4. a gradient-boosted and a small neural model over the eleven shipped features in place of
   the logistic one, fitted on SQuAD's held-out rows and one development set, measured on the
   other.

    .venv/bin/python bench/answerability_probes.py

Needs the SQuAD rows `bench/train_reader.py calibrate` caches for the shipped reader."""

from __future__ import annotations

import collections
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.train_reader import WORK, auc  # noqa: E402
from rag.config import Settings  # noqa: E402

SETS = ("calibration", "calibration_kernel")
PROBES = ("sentence_cosine", "idf_covered", "rarest_missing")


def read(name: str) -> dict:
    from rag.answer import Answerer
    from rag.display import fit_question
    from rag.evaluate import contains_answer
    from rag.reading import FEATURES, read_passages
    from rag.text import search_words, stem

    def keys(text: str) -> set[str]:
        return {stem(w) for w in search_words(text)}

    folder, work = ROOT / "bench" / name, ROOT / "bench" / "work" / name
    paragraphs = [p for f in sorted((work / "docs").glob("*.txt"))
                  for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    df = collections.Counter(k for p in paragraphs for k in keys(p))

    def idf(k: str) -> float:
        return math.log((len(paragraphs) + 1) / (df.get(k, 0) + 0.5))

    answerer = Answerer(Settings.from_env(index_dir=work / "index"))
    out: dict = {"rows": [], "probes": [], "labels": [], "kinds": []}
    for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["kind"] in ("instruction", "yesno") or item.get("follows"):
            continue
        question = fit_question(item["question"].strip())
        hits = answerer.retrieve(question)
        got = read_passages(answerer.reading.reader, question, hits)
        if got is None:
            continue
        text = hits[got.best.passage].chunk.text
        q, s = answerer.embedder.embed([question, text[slice(*got.sentence)]])
        asked, held = keys(question), keys(text)
        out["probes"].append([float(q @ s),
                              sum(map(idf, asked & held)) / (sum(map(idf, asked)) or 1.0),
                              -max(map(idf, asked - held), default=0.0)])
        out["rows"].append([got.features[f] for f in FEATURES])
        span = text[got.best.start:got.best.end]
        out["labels"].append(int(not item["unanswerable"] and
                                 contains_answer(span, tuple(item["answers"]))))
        out["kinds"].append(0 if item["unanswerable"] else 1)
    answerer.close()
    return {k: np.array(v) for k, v in out.items()}


def sorted_by(p, y, kind) -> str:
    return (f"right spans against the rest {auc(p[y == 1], p[y == 0]):.3f}, "
            f"answerable against unanswerable {auc(p[kind == 1], p[kind == 0]):.3f}")


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from rag.reader import checksum

    squad = json.loads((WORK / f"calibration-squad-{checksum()[:16]}-0.json").read_text())
    xs, ys = np.array(squad["rows"]), np.array(squad["labels"])
    mean, scale = xs.mean(0), xs.std(0) + 1e-9
    sets = {name: read(name) for name in SETS}
    for name, d in sets.items():
        print(f"{name}: {len(d['labels'])} questions, {int(d['labels'].sum())} best spans right")
        for i, probe in enumerate(PROBES):
            print(f"  {probe}: {sorted_by(d['probes'][:, i], d['labels'], d['kinds'])}")
        print(f"  margin: {sorted_by(d['rows'][:, 0], d['labels'], d['kinds'])}")
    for fit, test in (SETS, SETS[::-1]):
        a, b = sets[fit], sets[test]
        print(f"logistic, fitted on {fit} alone, measured on {test}:")
        for label, cols in (("eleven features", slice(0, 11)), ("with the probes", slice(None))):
            xa, xb = (np.hstack([d["rows"], d["probes"]])[:, cols] for d in (a, b))
            mu, sd = xa.mean(0), xa.std(0) + 1e-9
            model = LogisticRegression(max_iter=2000).fit((xa - mu) / sd, a["labels"])
            p = model.predict_proba((xb - mu) / sd)[:, 1]
            print(f"  {label}: {sorted_by(p, b['labels'], b['kinds'])}")
        x = np.vstack([(xs - mean) / scale, (a["rows"] - mean) / scale])
        y = np.concatenate([ys, a["labels"]])
        weight = np.concatenate([np.full(len(ys), 0.5 / len(ys)),
                                 np.full(len(a["labels"]), 0.5 / len(a["labels"]))]) * len(y)
        models = {"logistic": LogisticRegression(max_iter=2000),
                  "gradient-boosted trees": HistGradientBoostingClassifier(
                      max_depth=3, max_iter=150, learning_rate=0.05, random_state=0),
                  "neural (16 hidden)": MLPClassifier((16,), alpha=1e-2, max_iter=2000,
                                                      random_state=0)}
        print(f"fitted on SQuAD and {fit}, measured on {test}:")
        for label, model in models.items():
            if label.startswith("neural"):
                model.fit(x, y)  # no sample weights: the two sources as they come
            else:
                model.fit(x, y, sample_weight=weight)
            p = model.predict_proba((b["rows"] - mean) / scale)[:, 1]
            print(f"  {label}: {sorted_by(p, b['labels'], b['kinds'])}")


if __name__ == "__main__":
    main()
