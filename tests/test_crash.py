"""Crash safety and concurrency, across real processes.

The kill test is slow (each round starts a Python process that loads the embedding model), so
it is marked `slow` and runs only with RAG_SLOW_TESTS=1: `make test-slow` runs it, and so does
CI (.ci/run). The concurrency tests are quick
enough for every `make test`."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import IndexLocked, IndexMissing, StoreError
from rag.ingest import ingest
from rag.retrieve import Retriever
from rag.store import DB_NAME, open_store

from .conftest import SEEDS

KILL_ROUNDS = 12

# A child that ingests with small commits and prints a line as it starts each file, so the
# parent can kill it at a chosen moment: before, inside or after any commit.
INGEST_CHILD = textwrap.dedent("""
    import sys
    from rag.config import Settings
    from rag.ingest import ingest
    docs, index, commit_every = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def progress(stage, done, total):
        print(f"{stage} {done} {total}", flush=True)
    print("started", flush=True)
    report = ingest([docs], Settings.from_env(index_dir=index, n_threads=1), progress=progress,
                    commit_every=commit_every)
    print("done", len(report.added), len(report.replaced), flush=True)
""")

HOLD_LOCK_CHILD = textwrap.dedent("""
    import sys, time
    from rag.config import Settings
    from rag.store import open_store
    store, _ = open_store(Settings.from_env(index_dir=sys.argv[1], n_threads=1))
    with store.writer():
        print("locked", flush=True)
        if sys.argv[2] == "stdin":  # hold until the parent writes a line
            sys.stdin.readline()
        else:
            time.sleep(float(sys.argv[2]))
    print("released", flush=True)
""")


def make_corpus(folder: Path, n_docs: int, version: str = "a") -> list[str]:
    """n_docs distinct articles, a few chunks each, built from the seed sentences."""
    folder.mkdir(parents=True, exist_ok=True)
    sentences = [s for f in sorted(SEEDS.glob("*.txt")) for s in f.read_text().split(". ")
                 if len(s) > 40]
    rng = random.Random(42)
    out = []
    for i in range(n_docs):
        body = ". ".join(rng.sample(sentences, 8))
        p = folder / f"doc{i:03d}.txt"
        p.write_text(f"Report {i} version {version}: {rng.randint(1000, 9999)} units.\n{body}.")
        out.append(str(p))
    return out


def check_index(index: Path) -> tuple[int, set[str]]:
    """The index opens and is consistent with itself. Returns (generation, documents)."""
    settings = Settings.from_env(index_dir=index, n_threads=1)
    try:
        store, embedder = open_store(settings)
    except IndexMissing:  # killed before the first commit created it: nothing to check
        return -1, set()
    try:
        db = store.db
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n_chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        assert db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == n_chunks
        for source, expected in db.execute("SELECT source, n_chunks FROM documents"):
            got = db.execute("SELECT count(*) FROM chunks WHERE source = ?",
                             (source,)).fetchone()[0]
            assert got == expected, (source, got, expected)
        for source, text in db.execute("SELECT source, text FROM documents"):
            for _, c in store.all_chunks(source):
                assert text[c.start:c.end] == c.text
        assert store.faiss_index().ntotal == n_chunks
        if n_chunks:
            hits = Retriever(store, embedder).search("North Korean troops in Russia", 3)
            assert hits
        with store.writer(wait_s=5):  # as the next ingest would: temporaries left are cleared
            pass
        return store.generation(), {s for s, _ in store.documents()}
    finally:
        store.close()


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child ended before {prefix!r}: {proc.stderr.read()[-2000:]}")
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} within {timeout} s")


# -- kill -9 ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RAG_SLOW_TESTS"),
                    reason="slow (kill -9 rounds): run by `make test-slow`, and by CI")
def test_kill_9_at_many_moments_keeps_the_last_commit_and_the_next_ingest_completes(tmp_path):
    docs, index = tmp_path / "docs", tmp_path / "index"
    sources = make_corpus(docs, 60)
    rng = random.Random(7)
    generation, held = -1, set()
    moments = []
    for round_ in range(KILL_ROUNDS):
        changed = sorted(rng.sample(range(60), 20))  # each round has real work to do
        for i in changed:
            Path(sources[i]).write_text(f"Round {round_} rewrote report {i}. "
                                        + Path(sources[i]).read_text())
        child = spawn(INGEST_CHILD, str(docs), str(index), "4")
        # kill at start-up, as a changed file is reached (earlier ones are being embedded or
        # committed), or after the last file (the final commit, the FAISS file)
        where = rng.choice(["start", "file", "file", "file", "end"])
        if where == "start":
            wait_for(child, "started")
        elif where == "file":
            wait_for(child, f"read {rng.choice(changed[1:])} ")
        else:
            wait_for(child, "read 60 60")
        time.sleep(rng.uniform(0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        new_generation, new_held = check_index(index)
        assert not list(index.glob("*.tmp*")), list(index.glob("*"))
        assert new_generation >= generation  # committed work is never lost
        assert new_held >= held and new_held <= set(sources)
        moments.append((where, new_generation - generation))
        generation, held = new_generation, new_held
    advanced = sum(1 for _, d in moments if d > 0)
    print(f"{KILL_ROUNDS} kills (moment, commits since the last kill): {moments}; "
          f"{advanced} landed after new commits")
    assert advanced >= KILL_ROUNDS // 3  # the kills did land in the middle of real work

    settings = Settings.from_env(index_dir=index, n_threads=2)
    report = ingest([docs], settings)
    assert not report.refused
    _, final = check_index(index)
    assert final == set(sources)
    store, _ = open_store(settings)
    for source in sources:
        assert store.document_text(source) == Path(source).read_text()
    store.close()
    assert ingest([docs], settings).n_chunks == 0  # and now everything is up to date


def test_damaged_database_is_refused_with_the_fix(tmp_path, seed_copy):
    settings = Settings.from_env(index_dir=tmp_path / "index", n_threads=2)
    ingest([seed_copy], settings)
    db = settings.index_dir / DB_NAME
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreError, match="is damaged.*new --index folder"):
        open_store(settings)


def test_old_index_format_is_refused_with_the_fix(tmp_path, seed_copy):
    settings = Settings.from_env(index_dir=tmp_path / "index", n_threads=2)
    ingest([seed_copy], settings)
    with sqlite3.connect(settings.index_dir / DB_NAME) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    for create in (False, True):
        with pytest.raises(StoreError, match="delete the folder and re-run `rag ingest`"):
            open_store(settings, create=create)


# -- two processes at once -------------------------------------------------------------------

def test_readers_see_a_whole_state_while_another_process_ingests(tmp_path):
    docs, index = tmp_path / "docs", tmp_path / "index"
    make_corpus(docs, 30, version="a")
    settings = Settings.from_env(index_dir=index, n_threads=1)
    ingest([docs], settings)
    make_corpus(docs, 30, version="b")  # every document changes: deletes and inserts
    store, embedder = open_store(settings)
    retriever = Retriever(store, embedder)
    writer = spawn(INGEST_CHILD, str(docs), str(index), "4")
    wait_for(writer, "read 0 ")
    searches, generations = 0, set()
    while writer.poll() is None or searches < 3:
        hits = retriever.search("How many North Korean personnel went to Russia?", 5)
        generations.add(store.generation())
        assert hits
        for h in hits:  # each hit is whole and exact in the state the search saw
            text = store.document_text(h.chunk.source)
            assert text is not None and text[h.chunk.start:h.chunk.end] == h.chunk.text
        searches += 1
    out, err = writer.communicate()
    assert writer.returncode == 0, err[-2000:]
    assert "done 0 30" in out
    retriever.search("anything", 1)  # a new search moves on to the latest state
    assert store.document_text(str(docs / "doc000.txt")).count("version b") == 1
    store.close()
    print(f"{searches} searches during the ingest saw {len(generations)} generations")
    check_index(index)


def test_second_writer_waits_for_the_first_then_completes(tmp_path, seed_copy, monkeypatch):
    settings = Settings.from_env(index_dir=tmp_path / "index", n_threads=2)
    ingest([seed_copy], settings)
    new = seed_copy / "new.txt"
    new.write_text("A new report about the harbour arrived today.")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_CHILD, str(settings.index_dir),
                               "stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(holder, "locked")
    found_locked = threading.Event()
    real_flock = fcntl.flock

    def flock(fh, operation):
        try:
            return real_flock(fh, operation)
        except BlockingIOError:
            found_locked.set()
            raise

    monkeypatch.setattr(fcntl, "flock", flock)
    reports = []
    second = threading.Thread(target=lambda: reports.append(ingest([seed_copy], settings)))
    second.start()
    try:
        while second.is_alive() and not found_locked.wait(timeout=0.1):
            pass
        assert found_locked.is_set(), "the second writer did not wait for the held lock"
        store, _ = open_store(settings)
        written = {source for source, _ in store.documents()}
        store.close()
        assert str(new) not in written  # nothing written while the first writer holds the lock
        assert second.is_alive()
    finally:
        holder.stdin.write("release\n")
        holder.stdin.flush()
        second.join(timeout=300)
    assert holder.wait() == 0
    assert [r.added for r in reports] == [[str(new)]]
    check_index(settings.index_dir)


def test_second_writer_is_refused_clearly_when_the_wait_runs_out(tmp_path, seed_copy):
    settings = Settings.from_env(index_dir=tmp_path / "index", n_threads=2)
    ingest([seed_copy], settings)
    holder = spawn(HOLD_LOCK_CHILD, str(settings.index_dir), "30")
    try:
        wait_for(holder, "locked")
        store, _ = open_store(settings)
        with pytest.raises(IndexLocked, match="being written by another rag process"):
            with store.writer(wait_s=1.0):
                pass
        store.close()
    finally:
        holder.kill()
        holder.wait()
    store, _ = open_store(settings)  # the holder died holding the lock: it is free again
    with store.writer(wait_s=5.0):
        pass
    store.close()


def test_two_ingests_at_once_both_land(tmp_path):
    index = tmp_path / "index"
    first = make_corpus(tmp_path / "one", 12, version="one")
    second = make_corpus(tmp_path / "two", 12, version="two")
    children = [spawn(INGEST_CHILD, str(tmp_path / name), str(index), "8")
                for name in ("one", "two")]
    for child in children:
        out, err = child.communicate(timeout=900)
        assert child.returncode == 0, err[-2000:]
        assert "done 12 0" in out
    _, held = check_index(index)
    assert held == set(first) | set(second)


def test_ctrl_c_during_ingest_exits_130_and_the_next_ingest_finishes(tmp_path):
    docs, index = tmp_path / "docs", tmp_path / "index"
    sources = make_corpus(docs, 30)
    # Ctrl-C as a terminal delivers it, even where this run inherited SIGINT ignored (a job
    # started in the background by a shell without job control)
    proc = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(docs), "--index",
                             str(index)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (index / DB_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; the index keeps what was committed" in err
    check_index(index)
    report = ingest([docs], Settings.from_env(index_dir=index, n_threads=2))
    assert not report.refused
    assert check_index(index)[1] == set(sources)
