"""`rag eval` as users and CI drive it: the contract's JSON shape, exit code 4, baselines,
JUnit and HTML reports. Real models; small Q&A files for speed."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.config import PROJECT_ROOT

from .conftest import SEEDS

runner = CliRunner()

# A question the documents answer and one they do not: two, for speed.
PAIRS = [
    {"id": "q11", "question": "How many North Korean personnel have been deployed to Russia?",
     "answers": ["15,000", "15000"], "sources": ["000", "002"], "unanswerable": False},
    {"id": "q48", "question": "What is the boiling point of liquid nitrogen in Kelvin?",
     "answers": [], "sources": [], "unanswerable": True},
]


def _eval(*args):
    return runner.invoke(app, ["eval", *[str(a) for a in args]])


def _qa(path, pairs):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work(seed_settings, tmp_path_factory):
    """A private copy of the seed index, the small Q&A file, and a first run, kept as the
    baseline."""
    root = tmp_path_factory.mktemp("eval")
    index = root / "index"
    shutil.copytree(seed_settings.index_dir, index)
    qa = _qa(root / "qa.jsonl", PAIRS)
    r = _eval(qa, "--index", index, "--json")
    assert r.exit_code == 0, r.output
    first = root / "first.json"
    first.write_text(r.stdout, encoding="utf-8")
    return {"root": root, "index": index, "qa": qa, "first": first,
            "report": json.loads(r.stdout)}


def test_json_matches_the_contract(work):
    report = work["report"]
    assert isinstance(report["metrics"], dict)
    assert [i["id"] for i in report["items"]] == [p["id"] for p in PAIRS]
    for item, pair in zip(report["items"], PAIRS):
        assert item["question"] == pair["question"]
        assert isinstance(item["answer"], str) and item["answer"]
        assert isinstance(item["abstained"], bool)
        assert isinstance(item["latency_s"], float)
        for n, c in enumerate(item["citations"], 1):
            assert c["n"] == n and f"[{n}]" in item["answer"]
            assert isinstance(c["chunk_id"], str)
            with open(c["source"], encoding="utf-8") as f:
                assert c["text"] in f.read()
        assert item["retrieved"]
        for h in item["retrieved"]:
            assert set(h) >= {"source", "chunk_id", "score"}
            assert isinstance(h["source"], str) and isinstance(h["chunk_id"], str)
            assert isinstance(h["score"], float)
    m = report["metrics"]
    for name in ("recall@1", "recall@5", "mrr@5", "answer_accuracy", "answer_f1",
                 "abstention_accuracy", "false_abstention_rate", "citation_precision",
                 "citation_recall", "answer_words_mean", "latency_p50_s", "latency_p95_s"):
        assert isinstance(m[name], (int, float)), name
    from rag.reader import checksum

    assert m["reader_sha256"] == checksum() and m["embedding_model"]
    assert m["recall@5"] == 1.0 and m["answer_accuracy"] == 1.0
    assert report["gates"]["passed"] is True


def test_two_runs_are_identical_and_pass_against_the_first(work):
    again = _eval(work["qa"], "--index", work["index"], "--json", "--baseline", work["first"])
    assert again.exit_code == 0, again.output
    first, second = work["report"], json.loads(again.stdout)
    for a, b in zip(first["items"], second["items"]):
        assert (a["answer"], a["abstained"], a["citations"]) == \
            (b["answer"], b["abstained"], b["citations"])
    assert second["gates"]["failures"] == []
    assert second["gates"]["baseline"] == str(work["first"])


def test_wrong_accepted_answers_exit_4_naming_the_metrics(work):
    wrong = [{**p, "answers": ["zebra crossing"]} if not p["unanswerable"] else p
             for p in PAIRS]
    qa = _qa(work["root"] / "wrong.jsonl", wrong)
    junit = work["root"] / "wrong.xml"
    html = work["root"] / "wrong.html"
    r = _eval(qa, "--index", work["index"], "--baseline", work["first"], "--junit", junit,
              "--html", html)
    assert r.exit_code == 4, r.output
    assert "rag: eval gate failed: answer_accuracy fell from" in r.stderr
    assert "citation_precision fell from" in r.stderr
    assert "recall@5" not in r.stderr  # retrieval did not change
    assert "gates: FAILED" in r.stdout  # the table
    # JUnit: a <testsuite>, one case per pair, the wrong ones failed
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuite"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == [p["id"] for p in PAIRS]
    assert cases[0].find("failure") is not None
    # HTML: self-contained, the verdict, the chart against the baseline, every question
    page = html.read_text(encoding="utf-8")
    assert "gates FAILED" in page and "<svg" in page and "baseline" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page
    assert all(f"<td>{p['id']}</td>" in page for p in PAIRS)


def test_thresholds_from_flags_and_config(work, tmp_path):
    r = _eval(work["qa"], "--index", work["index"], "--json", "--retrieval-only",
              "--threshold", "recall@5=1.0", "--threshold", "mrr@5>=1.01",
              "--threshold", "latency_p95_s<=0.0001", "--threshold", "answer_accuracy=0.9")
    assert r.exit_code == 4
    gates = json.loads(r.stdout)["gates"]
    assert gates["thresholds"]["latency_p95_s"] == "<= 0.0001"
    assert [f.split(" = ")[0] for f in gates["failures"]] == ["latency_p95_s", "mrr@5"]
    assert "above its threshold 0.0001" in gates["failures"][0]
    assert gates["skipped"] == ["answer_accuracy"]
    config = tmp_path / "eval.toml"
    config.write_text('[thresholds]\n"recall@5" = 0.9\nlatency_p50_s = "<= 600"\n',
                      encoding="utf-8")
    ok = _eval(work["qa"], "--index", work["index"], "--config", config, "--retrieval-only")
    assert ok.exit_code == 0, ok.output
    assert "gates: passed" in ok.stdout


def test_bad_qa_file_names_file_and_line(work, tmp_path):
    qa = tmp_path / "bad.jsonl"
    qa.write_text(json.dumps(PAIRS[0]) + "\n{oops\n", encoding="utf-8")
    r = _eval(qa, "--index", work["index"])
    assert r.exit_code == 1
    assert f"{qa}:2: not valid JSON" in r.stderr
    assert _eval(work["qa"], "--index", work["index"], "--threshold", "recall@5>>1").exit_code == 1
    assert _eval(work["qa"], "--no-such-flag").exit_code == 2


def _eval_in_a_fresh_process(qa, index, *flags):
    """stdout, and whether llama_cpp was imported and how many GGUF models were loaded."""
    code = ("import sys\nfrom rag.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    status = e.code\n"
            "import rag.llm\n"
            "sys.stderr.write(f'\\nSTATUS={status} LLAMA={\"llama_cpp\" in sys.modules} '\n"
            "                 f'LLMS={len(rag.llm._cache)}\\n')\n")
    out = subprocess.run([sys.executable, "-c", code, "eval", str(qa), "--json", "--index",
                          str(index), *flags], capture_output=True, text=True, cwd=qa.parent)
    return out.stdout, out.stderr


def test_retrieval_only_loads_no_model_and_prints_one_json_object(seed_settings, tmp_path):
    qa = _qa(tmp_path / "qa.jsonl", PAIRS)
    stdout, stderr = _eval_in_a_fresh_process(qa, seed_settings.index_dir, "--retrieval-only")
    assert "STATUS=0 LLAMA=False LLMS=0" in stderr, stderr
    assert stdout.endswith("\n") and stdout.count("\n") == 1
    report = json.loads(stdout)
    assert set(report) >= {"metrics", "items"}
    for item in report["items"]:
        assert item["answer"] is None and item["abstained"] is None
        assert item["citations"] == []
        assert len(item["retrieved"]) == 5
    assert "answer_accuracy" not in report["metrics"]
    assert report["metrics"]["recall@5"] == 1.0


def test_answers_load_no_gguf_model(seed_settings, tmp_path):
    """The reader answers: an eval never loads llama.cpp."""
    qa = _qa(tmp_path / "qa.jsonl", PAIRS)
    stdout, stderr = _eval_in_a_fresh_process(qa, seed_settings.index_dir)
    assert "STATUS=0 LLAMA=False LLMS=0" in stderr, stderr
    items = json.loads(stdout)["items"]
    assert [i["abstained"] for i in items] == [False, True]


def test_seed_questions_pass_the_committed_retrieval_gates(seed_settings):
    """`make eval` runs the full gate (with the model); here the retrieval part of eval.toml
    runs over every seed question, and the answer gates are reported as skipped."""
    r = _eval(SEEDS / "qa.jsonl", "--index", seed_settings.index_dir, "--retrieval-only",
              "--config", PROJECT_ROOT / "eval.toml")
    assert r.exit_code == 0, r.output
    assert "threshold on answer_accuracy skipped (--retrieval-only)" in r.stderr
