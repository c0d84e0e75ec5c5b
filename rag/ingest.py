"""Files and folders -> the index. Unchanged documents are skipped, changed ones replaced, and
documents that vanished (from an ingested folder, or from a JSON Lines file) dropped. Refused
inputs are reported, never fatal.

Streamed: one file is read at a time, and its chunks are embedded and committed in batches, so
memory holds one batch (and one document) whatever the size of the corpus. Every commit is one
transaction: a run that is killed keeps what it committed, and the next run goes on from there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import chunk_document, split_sentences
from rag.config import Settings
from rag.discovery import discover
from rag.display import source_name
from rag.embedder import Embedder
from rag.errors import InputRefused
from rag.layout import pack_sentences, pack_tokens
from rag.sandbox import Reader
from rag.store import Store, open_store
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


def ingest(paths: list[str | Path], settings: Settings, progress: Progress | None = None,
           commit_every: int = COMMIT_EVERY_CHUNKS,
           notify: Callable[[str], None] | None = None) -> IngestReport:
    """`notify` is told what a person should know while it runs (waiting for another
    writer's lock)."""
    report = IngestReport()
    files, refused = discover(paths)
    report.refused.extend(refused)
    # what failed for an operating-system reason (a folder not readable just now) keeps what
    # the index holds under it: removal is for what is truly gone
    kept = [source_name(os.path.realpath(r.path)) for r in refused if r.transient]
    store, embedder = open_store(settings, create=True)
    try:
        with store.writer(notify=notify), Reader(settings.file_seconds,
                                                 settings.file_memory_mb) as reader:
            batch = _Batch(store, embedder, report, commit_every, settings.late_interaction)
            known = store.document_hashes()
            origin = store.document_files()
            seen = {source_name(str(p)) for p in files}
            roots = [source_name(str(Path(p).resolve())) for p in paths if Path(p).is_dir()]
            batch.remove(sorted({s for root in roots for s in store.documents_under(root)
                                 if origin.get(s) not in seen
                                 and not _under_any(origin.get(s, s), kept)}))
            for i, path in enumerate(files):
                if progress:
                    progress("read", i, len(files))
                _ingest_file(path, reader, batch, known, origin, embedder, settings, report)
            if progress:
                progress("read", len(files), len(files))
            batch.flush()
            batch.fill_in_sentences()
            store.refresh()
    finally:
        store.close()
    return report


def _under_any(name: str, roots: list[str]) -> bool:
    return any(name == r or name.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _ingest_file(path: Path, reader: Reader, batch: _Batch, known: dict[str, str],
                 origin: dict[str, str], embedder: Embedder, settings: Settings,
                 report: IngestReport) -> None:
    """One file's documents into the batch. Whatever goes wrong while reading, cleaning or
    chunking it becomes a refusal of this file (or record), and the ingest goes on."""
    shown, produced, whole_file_refused = str(path), set(), False
    name = source_name(shown)
    items = reader.load_all(path)
    while True:
        try:
            item = next(items, None)
            if item is None:
                break
            if isinstance(item, InputRefused):
                report.refused.append(item)
                whole_file_refused |= item.path == shown
                continue
            produced.add(item.source)
            if known.get(item.source) == item.sha256:
                report.unchanged.append(item.source)
                continue
            chunks = chunk_document(
                item, embedder.count_tokens,
                max_tokens=min(settings.chunk_tokens, embedder.max_text_tokens),
                overlap_sentences=settings.chunk_overlap_sentences,
                hard_limit=embedder.max_text_tokens)
        except Exception as e:  # a parser's or the chunker's failure on this one input
            report.refused.append(InputRefused(shown, f"could not be read ({type(e).__name__}"
                                                      f": {' '.join(str(e).split())[:160]})"))
            whole_file_refused = True
            break
        (report.replaced if item.source in known else report.added).append(item.source)
        batch.add(item, chunks)
    if not whole_file_refused:  # records that left a JSON Lines file
        batch.remove(sorted(s for s, f in origin.items()
                            if f == name and s != name and s not in produced))


class _Batch:
    """Documents waiting to be embedded and committed together, in one transaction."""

    def __init__(self, store: Store, embedder: Embedder, report: IngestReport,
                 commit_every: int, late_interaction: bool = False):
        self.store, self.embedder, self.report = store, embedder, report
        # token codes are written only where searches will read them: SQuAD ingest 13.3 s
        # without, 17.9 s with (bench/perf.py, 1.11x the bare encode against 0.87x)
        self.codes = late_interaction
        self.commit_every = max(1, commit_every)
        self.items: list[tuple[Document, list[Chunk]]] = []
        self.removals: list[str] = []
        self.size = 0
        self.warming: threading.Thread | None = None

    def add(self, doc: Document, chunks: list[Chunk]) -> None:
        self.items.append((doc, chunks))
        self.size += len(chunks)
        if self.warming is None:
            # the embedding engine (~1.3 s to import torch and load) loads while the next
            # documents are read and chunked; the first flush waits for it
            self.warming = threading.Thread(target=self.embedder.warm, daemon=True)
            self.warming.start()
        if self.size >= self.commit_every:
            self.flush()

    def remove(self, sources: list[str]) -> None:
        self.removals.extend(sources)
        self.report.removed.extend(sources)

    def flush(self) -> None:
        if not self.items and not self.removals:
            return
        texts = [c.text for _, chunks in self.items for c in chunks]
        tokens = {c.text: c.n_tokens for _, chunks in self.items for c in chunks}
        # the same passage (a header, a repeated line) is embedded once
        unique = list(dict.fromkeys(texts))
        at = {t: i for i, t in enumerate(unique)}
        position = [at[t] for t in texts]
        vectors, sentences = self._embed(unique, [tokens[t] for t in unique])
        vectors = vectors[position]
        rows, offset = [], 0
        for doc, chunks in self.items:
            rows.append((doc, chunks, vectors[offset:offset + len(chunks)],
                         [sentences[i] for i in position[offset:offset + len(chunks)]]))
            offset += len(chunks)
        self.store.replace_documents(rows, remove=self.removals)
        self.report.n_chunks += len(texts)
        self.items, self.removals, self.size = [], [], 0

    def _embed(self, texts: list[str], lengths: list[int]
               ) -> tuple[np.ndarray, list[tuple[bytes, bytes | None]]]:
        """Each text's vector, and its sentences packed with theirs (layout.pack_sentences)
        beside its tokens' codes (layout.pack_tokens; None while late interaction is off), all
        from one forward pass."""
        if not texts:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32), []
        spans = [split_sentences(t) for t in texts]
        if not self.codes:
            vectors, parts = self.embedder.embed_with_sentences(texts, spans, lengths=lengths)
            return vectors, [(pack_sentences(s, p), None) for s, p in zip(spans, parts)]
        vectors, parts, codes = self.embedder.embed_with_sentences(texts, spans, lengths=lengths,
                                                                   codes=True)
        return vectors, [(pack_sentences(s, p), pack_tokens(c))
                         for s, p, c in zip(spans, parts, codes)]

    def fill_in_sentences(self) -> None:
        """Sentence vectors and token codes for the chunks an older rag indexed without them,
        a batch at a time (each batch one transaction), so that searches can use them."""
        while rows := self.store.chunks_without_sentences(self.commit_every, self.codes):
            _, sentences = self._embed([t for _, t in rows],
                                       self.embedder.count_tokens([t for _, t in rows]))
            self.store.set_sentences(zip([r for r, _ in rows], sentences))
