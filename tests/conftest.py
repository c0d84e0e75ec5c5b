"""Shared fixtures: the real bundled models, one seed index per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT, Settings

SEEDS = PROJECT_ROOT / "seeds"


def _clear_rag_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def _no_rag_variables_for_session_fixtures():
    """A developer's RAG_* settings (RAG_ANSWER_STYLE, RAG_THREADS, ...) never reach the shared
    seed index or answerer; the per-test fixture below covers each test."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clear_rag_variables(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _no_rag_variables(monkeypatch):
    """Each test starts with no RAG_* variable set, whatever the one before it set."""
    _clear_rag_variables(monkeypatch)


@pytest.fixture(scope="session")
def seed_settings(tmp_path_factory) -> Settings:
    from rag.ingest import ingest

    index = tmp_path_factory.mktemp("seed-index")
    settings = Settings.from_env(index_dir=index, n_threads=2)
    report = ingest([str(SEEDS)], settings)
    assert not report.refused
    return settings


@pytest.fixture(scope="session")
def answerer(seed_settings):
    """An Answerer over the seed index, shared by the tests that only ask."""
    from rag.answer import Answerer

    a = Answerer(seed_settings)
    yield a
    a.close()


@pytest.fixture
def fresh_settings(tmp_path) -> Settings:
    return Settings.from_env(index_dir=tmp_path / "index", n_threads=2)


@pytest.fixture
def seed_copy(tmp_path) -> Path:
    """A private, writable copy of the seed articles."""
    dst = tmp_path / "docs"
    dst.mkdir()
    for f in sorted(SEEDS.glob("*.txt")):
        shutil.copy(f, dst / f.name)
    return dst
