"""The command line as users and scripts drive it; JSON shapes from shared/CONTRACT.md."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rag.cli import app

from .conftest import SEEDS

runner = CliRunner()


def _run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_help_imports_no_heavy_module():
    code = ("import sys; from typer.testing import CliRunner; from rag.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'llama_cpp', 'faiss', 'sentence_transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_rag_works():
    out = subprocess.run([sys.executable, "-m", "rag", "--help"], capture_output=True,
                         text=True, check=True)
    assert "ingest" in out.stdout and "ask" in out.stdout


def test_unknown_option_is_usage_error():
    assert _run("search", "x", "--no-such-flag").exit_code == 2


def test_search_json_shape(seed_settings):
    r = _run("search", "How many troops were deployed?", "--json", "--k", "3",
             "--index", seed_settings.index_dir)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["query"] == "How many troops were deployed?"
    assert len(data["hits"]) == 3
    for i, h in enumerate(data["hits"]):
        assert h["rank"] == i + 1
        assert isinstance(h["source"], str) and isinstance(h["chunk_id"], str)
        assert isinstance(h["score"], float) and isinstance(h["text"], str)
        with open(h["source"], encoding="utf-8") as f:
            assert h["text"] in f.read()


def test_ask_json_shape(seed_settings):
    q = "How many North Korean personnel have been deployed to Russia?"
    r = _run("ask", q, "--json", "--index", seed_settings.index_dir)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["question"] == q
    assert isinstance(data["answer"], str) and data["abstained"] is False
    assert "15,000" in data["answer"]
    assert set(data["timings"]) >= {"retrieve_s", "generate_s", "total_s"}
    assert all(isinstance(v, float) for v in data["timings"].values())
    ns = {c["n"] for c in data["citations"]}
    for n in [int(x) for x in __import__("re").findall(r"\[(\d+)\]", data["answer"])]:
        assert n in ns
    for c in data["citations"]:
        assert set(c) >= {"n", "source", "chunk_id", "text"}
        with open(c["source"], encoding="utf-8") as f:
            assert c["text"] in f.read()
    v = data["verification"]
    assert v["answerer"] == "reader" and v["span"] in data["answer"]
    assert v["checks"] == {"supported_by_sentence": True} and "reason" not in v
    assert v["answerable_chance"] >= v["answerable_threshold"]


def test_ask_json_abstains(seed_settings):
    r = _run("ask", "What is the capital of Australia?", "--json",
             "--index", seed_settings.index_dir)
    data = json.loads(r.stdout)
    assert data["abstained"] is True and data["citations"] == []
    assert data["answer"]
    v = data["verification"]
    assert v["reason"] in data["answer"] and "checks" not in v and "span" not in v
    assert v["answerable_chance"] < v["answerable_threshold"]


def test_ask_prints_answer_and_sources(seed_settings):
    r = _run("ask", "How many North Korean personnel have been deployed to Russia?", "--index",
             seed_settings.index_dir)
    assert r.exit_code == 0
    assert "[1]" in r.stdout and "Sources:" in r.stdout and "seeds" in r.stdout
    assert "Searched" not in r.stdout


def test_an_abstention_names_the_passages_it_searched(seed_settings):
    r = _run("ask", "What is the capital of Australia?", "--index", seed_settings.index_dir)
    assert r.exit_code == 0
    said, _, searched = r.stdout.partition("\n\nSearched, none judged to answer it:\n")
    assert said.startswith("The indexed documents do not answer this question")
    assert "Sources:" not in r.stdout and "[1]" not in r.stdout  # nothing is cited
    rows = searched.strip().splitlines()
    assert len(rows) == 3
    assert all("seeds" in row and row.rstrip().endswith(")") for row in rows)


def test_ask_style_short_and_a_wrong_style(seed_settings):
    q = "How many North Korean personnel have been deployed to Russia?"
    r = _run("ask", q, "--json", "--style", "short", "--index", seed_settings.index_dir)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert "15,000" in data["answer"] and len(data["answer"].split()) <= 7
    r = _run("ask", q, "--json", "--style", "quote", "--index", seed_settings.index_dir)
    quoted = json.loads(r.stdout)
    assert quoted["answer"] == f"{quoted['citations'][0]['text']} [1]"
    assert len(quoted["answer"].split()) > len(data["answer"].split())
    r = _run("ask", q, "--style", "long", "--index", seed_settings.index_dir)
    assert r.exit_code == 2 and "long" in r.stderr


def test_ask_without_index_fails_with_one_line(tmp_path):
    r = _run("ask", "anything?", "--index", tmp_path / "none")
    assert r.exit_code == 1
    assert "rag ingest" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_model_is_one_line_error(seed_settings):
    r = _run("ask", "How many troops?", "--model", "models/absent.gguf",
             "--index", seed_settings.index_dir)
    assert r.exit_code == 1
    assert "absent.gguf not found" in r.stderr


def test_ingest_partial_success_exits_3(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("The river flooded the town in March after heavy rain.")
    (docs / "empty.txt").write_text("")
    r = _run("ingest", docs, "--index", tmp_path / "idx")
    assert r.exit_code == 3
    assert f"refused {docs / 'empty.txt'}: empty file" in r.stderr
    s = _run("search", "flood", "--json", "--index", tmp_path / "idx")
    assert json.loads(s.stdout)["hits"][0]["source"] == str(docs / "good.txt")


def test_ingest_only_refused_exits_1(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01\x02" * 100)
    r = _run("ingest", tmp_path / "bad.txt", "--index", tmp_path / "idx")
    assert r.exit_code == 1 and "binary" in r.stderr


def test_index_from_environment(seed_settings):
    r = _run("search", "armistice", "--json", env={"RAG_INDEX": str(seed_settings.index_dir)})
    assert r.exit_code == 0 and json.loads(r.stdout)["hits"]


def test_models_lists_sizes():
    r = _run("models")
    assert r.exit_code == 0
    assert "smollm2" in r.stdout and "MiB" in r.stdout


@pytest.mark.parametrize("cmd, runs", [("demo", ["rag ingest seeds", "rag ask", "rag brief"]),
                                       ("test", ["ruff check", "pytest"])])
def test_readme_quick_start_is_the_two_make_commands(cmd, runs):
    readme = (SEEDS.parent / "README.md").read_text()
    assert f"make {cmd}" in readme
    dry = subprocess.run(["make", "-n", "-C", str(SEEDS.parent), cmd], capture_output=True,
                         text=True)
    assert dry.returncode == 0, dry.stderr
    for command in runs:
        assert command in dry.stdout, (cmd, command)


def _readme_example(command: str) -> list[str]:
    """The output the README shows for `command`: the indented block after the line naming it."""
    readme = (SEEDS.parent / "README.md").read_text(encoding="utf-8")
    after = readme.split(f"`{command}` over `seeds/` prints:", 1)[1].lstrip("\n")
    block = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return [line for line in "\n".join(block).strip().splitlines()]


def test_readme_worked_example_is_what_ask_prints(seed_settings):
    question = "How many North Korean personnel have been deployed to Russia?"
    shown = _readme_example(f'rag ask "{question}"')
    r = _run("ask", question, "--index", seed_settings.index_dir)
    assert r.exit_code == 0, r.output
    printed = r.stdout.strip().splitlines()
    assert len(printed) == len(shown), (printed, shown)
    for got, expected in zip(printed, shown, strict=True):
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        assert re.fullmatch(pattern, got), (got, expected)
