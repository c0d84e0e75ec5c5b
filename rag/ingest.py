"""Files and folders -> the index. Unchanged files are skipped, changed ones replaced, and
files that vanished from an ingested folder dropped. Refused files are reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import chunk_document
from rag.config import Settings
from rag.embedder import Embedder, get_embedder
from rag.errors import InputRefused
from rag.loaders import discover, load
from rag.registry import resolve_embedding
from rag.store import Store
from rag.types import Chunk, Document

# Commit after this many chunks, so a long ingest that is killed keeps what it finished.
COMMIT_EVERY_CHUNKS = 2048


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[InputRefused] = field(default_factory=list)
    n_chunks: int = 0

    def as_json(self) -> dict:
        return {"added": self.added, "replaced": self.replaced, "unchanged": self.unchanged,
                "removed": self.removed, "n_chunks": self.n_chunks,
                "refused": [{"path": r.path, "reason": r.reason} for r in self.refused]}


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def open_store(settings: Settings, create: bool = False) -> tuple[Store, Embedder]:
    embedder = get_embedder(resolve_embedding(settings.embedding_model, settings),
                            settings.threads)
    store = Store.open(settings.index_dir, embedder.name, embedder.fingerprint,
                       embedder.dimension, create=create)
    return store, embedder


def ingest(paths: list[str | Path], settings: Settings,
           progress: Progress | None = None) -> IngestReport:
    report = IngestReport()
    files, refused = discover(paths)
    report.refused.extend(refused)
    store, embedder = open_store(settings, create=True)
    try:
        with store.writer():
            known = store.document_hashes()
            pending: list[tuple[Document, list[Chunk]]] = []
            for i, path in enumerate(files):
                if progress:
                    progress("read", i, len(files))
                try:
                    doc = load(path)
                except InputRefused as e:
                    report.refused.append(e)
                    continue
                if known.get(doc.source) == doc.sha256:
                    report.unchanged.append(doc.source)
                    continue
                (report.replaced if doc.source in known else report.added).append(doc.source)
                chunks = chunk_document(doc, embedder.count_tokens,
                                        max_tokens=min(settings.chunk_tokens,
                                                       embedder.max_text_tokens),
                                        overlap_sentences=settings.chunk_overlap_sentences,
                                        hard_limit=embedder.max_text_tokens)
                pending.append((doc, chunks))
            seen = {str(p) for p in files}
            vanished = [s for p in paths if Path(p).is_dir()
                        for s in store.documents_under(str(Path(p).resolve()))
                        if s not in seen]
            report.removed = sorted(set(vanished))
            _embed_and_commit(store, embedder, pending, report, progress)
            if report.removed and not pending:
                store.replace_documents([], remove=report.removed)
            store.refresh_faiss()
    finally:
        store.close()
    return report


def _embed_and_commit(store: Store, embedder: Embedder,
                      pending: list[tuple[Document, list[Chunk]]], report: IngestReport,
                      progress: Progress | None) -> None:
    total = sum(len(c) for _, c in pending)
    done = 0
    batch: list[tuple[Document, list[Chunk]]] = []
    removals = list(report.removed)

    def flush() -> None:
        nonlocal done, removals
        texts = [c.text for _, chunks in batch for c in chunks]

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("embed", done, total)

        vectors = embedder.embed(texts, progress=tick) if texts else np.zeros((0, 1))
        items, offset = [], 0
        for doc, chunks in batch:
            items.append((doc, chunks, vectors[offset:offset + len(chunks)]))
            offset += len(chunks)
        store.replace_documents(items, remove=removals)
        removals = []
        report.n_chunks += len(texts)
        batch.clear()

    size = 0
    for item in pending:
        batch.append(item)
        size += len(item[1])
        if size >= COMMIT_EVERY_CHUNKS:
            flush()
            size = 0
    if batch:
        flush()
