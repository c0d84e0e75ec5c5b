"""Shared fixtures: the real bundled models, one seed index per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT, Settings

SEEDS = PROJECT_ROOT / "seeds"


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
