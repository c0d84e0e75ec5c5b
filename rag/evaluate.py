"""The eval job: fixed Q&A pairs -> retrieval, answer, abstention and citation metrics, and
gates (thresholds, a baseline) that decide whether a run regressed."""

from __future__ import annotations

import json
import re
import statistics
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.config import Settings
from rag.errors import QAFileError

# Metrics where a smaller value is better; every other metric is better larger.
LOWER_IS_BETTER = {"false_abstention_rate", "latency_p50_s", "latency_p95_s",
                   "answer_words_mean"}
# Metrics only a run with the model has; a --retrieval-only run skips their thresholds.
ANSWER_METRICS = {"answer_accuracy", "answer_f1", "false_abstention_rate", "citation_precision",
                  "citation_recall", "answer_words_mean", "abstention_accuracy"}
# Compared with a baseline only through thresholds: wall-clock time depends on the machine
# (and the cache), answer length is neither better nor worse, counts are not quality.
NOT_AGAINST_BASELINE = ("latency_", "answer_words_mean", "n_", "k", "index_")
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    sources: tuple[str, ...]
    unanswerable: bool


def load_qa(path: Path) -> list[QAItem]:
    if not path.is_file():
        raise QAFileError(f"{path}: no such Q&A file")
    items: list[QAItem] = []
    ids: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise QAFileError(f"{path}:{line}: not UTF-8 (a Q&A file must be UTF-8)") from None
    except OSError as e:
        raise QAFileError(f"{path}: cannot be read ({(e.strerror or str(e)).lower()})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise QAFileError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise QAFileError(f"{where}: each line must be a JSON object")
        for key, kind in (("id", str), ("question", str)):
            if not isinstance(obj.get(key), kind) or not obj[key].strip():
                raise QAFileError(f"{where}: {key!r} must be a non-empty string")
        unanswerable = obj.get("unanswerable", False)
        if not isinstance(unanswerable, bool):
            raise QAFileError(f"{where}: 'unanswerable' must be true or false")
        answers, sources = obj.get("answers", []), obj.get("sources", [])
        for key, val in (("answers", answers), ("sources", sources)):
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise QAFileError(f"{where}: {key!r} must be a list of strings")
        if not unanswerable and not answers:
            raise QAFileError(f"{where}: an answerable pair needs at least one accepted answer")
        if unanswerable and (answers or sources):
            raise QAFileError(f"{where}: an unanswerable pair must have empty answers and "
                              "sources")
        if obj["id"] in ids:
            raise QAFileError(f"{where}: id {obj['id']!r} is used twice")
        ids.add(obj["id"])
        items.append(QAItem(obj["id"], obj["question"], tuple(answers), tuple(sources),
                            unanswerable))
    if not items:
        raise QAFileError(f"{path}: holds no Q&A pairs")
    return items


def source_matches(entry: str, source: str) -> bool:
    """`000` matches 000_99d9.txt and 000.txt; `s12` does not match s123.txt."""
    name = Path(source).name
    if not name.startswith(entry):
        return False
    rest = name[len(entry):]
    return rest == "" or not rest[0].isalnum()


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(" " if ch in string.punctuation or ch in "“”‘’–—" else ch for ch in text)
    return " ".join(text.split())


def contains_answer(text: str, answers: tuple[str, ...]) -> bool:
    norm = f" {normalize(text)} "
    return any(f" {normalize(a)} " in norm for a in answers if normalize(a))


# An answer is right when it holds an accepted answer in at most this many words: a long
# quotation that happens to contain the answer leaves the reader to find it.
MAX_ANSWER_WORDS = 40


def answer_right(text: str, answers: tuple[str, ...]) -> bool:
    return len(text.split()) <= MAX_ANSWER_WORDS and contains_answer(text, answers)


def _f1_tokens(text: str) -> list[str]:
    return [t for t in normalize(text).split() if t not in ("a", "an", "the")]


def token_f1(prediction: str, answers: tuple[str, ...]) -> float:
    pred = _f1_tokens(prediction)
    best = 0.0
    for a in answers:
        gold = _f1_tokens(a)
        common = Counter(pred) & Counter(gold)
        same = sum(common.values())
        if same == 0 or not pred or not gold:
            continue
        p, r = same / len(pred), same / len(gold)
        best = max(best, 2 * p * r / (p + r))
    return best


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def run(settings: Settings, items: list[QAItem], retrieval_only: bool = False, k: int = 5,
        progress: Callable[[int, int], None] | None = None) -> dict:
    """Ask every question; the report holds the metrics and one entry per pair."""
    from rag.answer import Answerer
    from rag.citations import strip_markers
    from rag.reader import checksum

    answerer = Answerer(settings)
    out_items = []
    try:
        for i, item in enumerate(items):
            t0 = time.perf_counter()
            if retrieval_only:
                hits = answerer.retrieve(item.question, k)
                answer = None
            else:
                answer = answerer.ask(item.question, k)
                hits = list(answer.hits)
            latency = time.perf_counter() - t0
            out_items.append({
                "id": item.id,
                "question": item.question,
                "answer": None if answer is None else answer.answer,
                "abstained": None if answer is None else answer.abstained,
                "citations": [] if answer is None else [c.as_json() for c in answer.citations],
                "retrieved": [{"source": h.chunk.source, "chunk_id": h.chunk.chunk_id,
                               "score": round(h.score, 6)} for h in hits],
                "latency_s": round(latency, 4),
                "method": None if answer is None else answer.method,
                "answer_text": None if answer is None else strip_markers(answer.answer),
            })
            ok, why = item_passed(item, out_items[-1])
            out_items[-1].update(passed=ok, failure=why or None)
            if progress:
                progress(i + 1, len(items))
        fingerprints = {
            "embedding_model": answerer.embedder.name,
            "embedding_fingerprint": answerer.embedder.fingerprint,
            "index_generation": answerer.store.generation(),
            "index_documents": answerer.store.manifest().n_documents,
        }
        if not retrieval_only:
            fingerprints["reader_sha256"] = checksum()
    finally:
        answerer.close()
    metrics = compute_metrics(items, out_items, k, retrieval_only)
    metrics.update(fingerprints)
    return {"metrics": metrics, "items": out_items}


def compute_metrics(items: list[QAItem], results: list[dict], k: int,
                    retrieval_only: bool) -> dict:
    m: dict = {"n_items": len(items), "n_unanswerable": sum(q.unanswerable for q in items),
               "k": k}
    answerable = [(q, r) for q, r in zip(items, results) if not q.unanswerable and q.sources]
    ranks = []
    for q, r in answerable:
        rank = next((i + 1 for i, h in enumerate(r["retrieved"])
                     if any(source_matches(s, h["source"]) for s in q.sources)), None)
        ranks.append(rank)
    if ranks:
        for cut in sorted({1, 3, 5, k}):
            if cut <= k:
                m[f"recall@{cut}"] = _mean([r is not None and r <= cut for r in ranks])
        m[f"mrr@{k}"] = _mean([1 / r if r else 0.0 for r in ranks])
    latencies = [r["latency_s"] for r in results]
    m["latency_p50_s"] = round(_percentile(latencies, 0.5), 4)
    m["latency_p95_s"] = round(_percentile(latencies, 0.95), 4)
    if retrieval_only:
        return m
    ans = [(q, r) for q, r in zip(items, results) if not q.unanswerable]
    unans = [(q, r) for q, r in zip(items, results) if q.unanswerable]
    if ans:
        m["answer_accuracy"] = _mean([not r["abstained"] and
                                      answer_right(r["answer_text"], q.answers)
                                      for q, r in ans])
        m["answer_f1"] = _mean([0.0 if r["abstained"] else token_f1(r["answer_text"], q.answers)
                                for q, r in ans])
        m["false_abstention_rate"] = _mean([r["abstained"] for _, r in ans])
        answered = [(q, r) for q, r in ans if not r["abstained"]]
        cites = [contains_answer(c["text"], q.answers) for q, r in answered
                 for c in r["citations"]]
        m["citation_precision"] = _mean(cites) if cites else 0.0
        m["citation_recall"] = _mean([any(contains_answer(c["text"], q.answers)
                                          for c in r["citations"]) for q, r in answered]) \
            if answered else 0.0
        m["answer_words_mean"] = round(statistics.mean(
            len(r["answer_text"].split()) for _, r in answered), 2) if answered else 0.0
    if unans:
        m["abstention_accuracy"] = _mean([r["abstained"] for _, r in unans])
    return m


def _mean(values) -> float:
    values = list(values)
    return round(sum(float(v) for v in values) / len(values), 4) if values else 0.0


# -- gates -----------------------------------------------------------------------------------
# A threshold is (op, limit) with op ">=" (at least) or "<=" (at most).

def natural_op(name: str) -> str:
    return "<=" if name in LOWER_IS_BETTER else ">="


def parse_threshold(spec: str) -> tuple[str, tuple[str, float]]:
    """`answer_accuracy=0.95` (the metric's own direction: at least, or at most for the
    lower-is-better ones), `answer_words_mean<=12`, `recall@5>=0.9`."""
    match = re.fullmatch(r"\s*([\w@.]+)\s*(>=|<=|=)\s*([0-9]*\.?[0-9]+)\s*", spec)
    if not match:
        raise QAFileError(f"threshold {spec!r} must look like metric=0.9, metric>=0.9 or "
                          "metric<=0.05")
    name, op = match.group(1), match.group(2)
    return name, (natural_op(name) if op == "=" else op, float(match.group(3)))


def load_thresholds(path: Path) -> dict[str, tuple[str, float]]:
    """The [thresholds] table of a TOML file: `metric = 0.9` in the metric's own direction,
    or `metric = "<= 12"` / `">= 0.9"` explicitly."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise QAFileError(f"{path}: cannot read thresholds ({e})") from None
    table = data.get("thresholds")
    if not isinstance(table, dict):
        raise QAFileError(f"{path}: needs a [thresholds] table, e.g. `recall@5 = 0.9`")
    out = {}
    for name, value in table.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = (natural_op(name), float(value))
        elif isinstance(value, str):
            out[name] = parse_threshold(f"{name}{value}")[1]
        else:
            raise QAFileError(f"{path}: threshold {name!r} must be a number or a string like "
                              "\"<= 0.05\"")
    return out


def check_gates(metrics: dict, thresholds: dict[str, tuple[str, float]],
                baseline: dict | None = None, tolerance: float = DEFAULT_TOLERANCE,
                retrieval_only: bool = False) -> dict:
    """Every threshold and baseline comparison; `failures` says in words which fell."""
    failures, skipped, notes = [], [], []
    for name, (op, limit) in sorted(thresholds.items()):
        if name not in metrics:
            if retrieval_only and name in ANSWER_METRICS:
                skipped.append(name)
            else:
                failures.append(f"{name}: no such metric in this run")
            continue
        value = metrics[name]
        if op == "<=" and value > limit:
            failures.append(f"{name} = {value} is above its threshold {limit}")
        elif op == ">=" and value < limit:
            failures.append(f"{name} = {value} is below its threshold {limit}")
    base = (baseline or {}).get("metrics", baseline or {})
    for name, old in sorted(base.items()):
        new = metrics.get(name)
        if isinstance(old, str) and isinstance(new, str) and old != new:
            notes.append(f"{name} differs from the baseline: {old} -> {new}")
        if not number(old) or not number(new) or name.startswith(NOT_AGAINST_BASELINE):
            continue
        if name in LOWER_IS_BETTER and new > old + tolerance:
            failures.append(f"{name} rose from {old} to {new} (tolerance {tolerance})")
        elif name not in LOWER_IS_BETTER and new < old - tolerance:
            failures.append(f"{name} fell from {old} to {new} (tolerance {tolerance})")
    return {"thresholds": {n: f"{op} {v}" for n, (op, v) in sorted(thresholds.items())},
            "tolerance": tolerance, "failures": failures, "skipped": skipped, "notes": notes,
            "passed": not failures}


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- reports ---------------------------------------------------------------------------------

def item_passed(item: QAItem, result: dict) -> tuple[bool, str]:
    if result["answer"] is None:  # retrieval only
        if item.unanswerable or not item.sources:
            return True, ""
        ok = any(source_matches(s, h["source"]) for h in result["retrieved"] for s in item.sources)
        return ok, "" if ok else "no passage from the expected sources was retrieved"
    if item.unanswerable:
        return bool(result["abstained"]), "" if result["abstained"] else \
            f"should abstain, answered: {result['answer']}"
    if result["abstained"]:
        return False, "abstained on an answerable question"
    if not contains_answer(result["answer_text"], item.answers):
        return False, f"answer {result['answer']!r} holds none of {list(item.answers)}"
    if not answer_right(result["answer_text"], item.answers):
        return False, (f"answer holds {list(item.answers)} but runs "
                       f"{len(result['answer_text'].split())} words (at most "
                       f"{MAX_ANSWER_WORDS})")
    return True, ""
