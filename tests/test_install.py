"""The package installs: a wheel built from this tree, installed into a fresh virtual environment,
answers on the seeds from a folder outside the source tree.

The fresh environment gets the wheel alone (`--no-deps`); the heavy dependencies (torch, llama.cpp,
the model packages) are borrowed from the environment running the tests through a .pth file, so
the test checks what the wheel carries without installing gigabytes again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT

QUESTION = "How many North Korean personnel have been deployed to Russia?"


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{args[:3]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv holding only the wheel built from this tree."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    for name in ("rag", "prompts"):
        shutil.copytree(PROJECT_ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (src / "models").mkdir()
    for name in ("models/registry.toml", "pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
          "--no-build-isolation", src, "-w", dist])
    (wheel,) = dist.glob("rag-*.whl")

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", wheel])
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """No path back into the source tree, no developer's RAG_* settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("RAG_") and k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_wheel_carries_the_prompts_and_the_registry(installed, tmp_path):
    code = ("import rag, rag.config as c; s = c.Settings(); "
            "print(rag.__file__); print(s.prompts_dir); print(s.models_dir)")
    out = _run([installed / "python", "-c", code], cwd=tmp_path, env=_clean_env()).stdout
    module, prompts_dir, models_dir = (Path(line) for line in out.split())
    venv = installed.parent
    for path in (module, prompts_dir, models_dir):
        assert path.is_relative_to(venv), f"{path} is not inside the fresh venv {venv}"
    assert {p.name for p in (PROJECT_ROOT / "prompts").glob("*.txt")} == \
        {p.name for p in prompts_dir.glob("*.txt")}
    assert (models_dir / "registry.toml").read_text() == \
        (PROJECT_ROOT / "models" / "registry.toml").read_text()


def test_the_installed_rag_ingests_the_seeds_and_answers(installed, tmp_path, seed_copy):
    env = {**_clean_env(), "RAG_THREADS": "2"}
    _run([installed / "rag", "ingest", seed_copy, "--index", "idx"], cwd=tmp_path, env=env)
    out = _run([installed / "rag", "ask", QUESTION, "--index", "idx", "--json"],
               cwd=tmp_path, env=env).stdout
    result = json.loads(out)
    assert not result["abstained"]
    assert "15,000" in result["answer"] and "[1]" in result["answer"]
    assert "15,000 North Korean personnel" in result["citations"][0]["text"]
