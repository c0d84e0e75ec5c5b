"""The embedding model behind one method, loaded once and lazily.

Every text, a question as much as a chunk, goes through one engine, so a question's vector
never depends on what the process did before:
- for a plain mean-pooled BERT (all-MiniLM-L6-v2 and its kind), rag's own BERT forward in
  torch (rag.minilm.TorchMiniLM; no sentence-transformers or transformers import, ~3.4 s less
  to load), in bfloat16 with oneDNN's packed weights where the CPU computes it natively
  (cosine >= 0.9999 to float32);
- any other model through sentence-transformers.
Measured on the Intel Xeon (AMX) of bench/results.md, against the numpy forward that embedded
questions before (rag.minilm.MiniLM, kept as the torch-free reference): a question 15.5 ms ->
4.4 ms on one thread, 3.3 ms on two; twenty sentences 0.35 s -> 0.10 s. The price is torch's
import, ~1.1 s on a cold `rag ask` (2.5 s -> 3.6 s; the target is 8 s).

Token counting uses the model's own fast tokenizer (tokenizers, no torch), so chunking
and `rag --help` never pay for importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np

from rag.config import cpu_flags
from rag.registry import ModelSpec

# Vectors of recent short-call texts (questions, a briefing's sentences), kept for the next
# question of a session: a follow-up mostly meets the same passages again.
MEMO_TEXTS = 8192
# Calls of up to this many texts go through that memory; ingest's batches do not.
MEMO_CALL_TEXTS = 256
QUESTION_MEMO = 64  # questions whose token states are remembered (embed_question)


class Embedder:
    def __init__(self, spec: ModelSpec, threads: int = 0):
        self.spec = spec
        self.name = spec.name
        self.path = spec.path
        self.threads = threads

    @cached_property
    def _config(self) -> dict:
        cfg_file = self.path / "sentence_bert_config.json"
        return json.loads(cfg_file.read_text()) if cfg_file.exists() else {}

    @property
    def max_seq_length(self) -> int:
        return int(self.spec.max_seq_length or self._config.get("max_seq_length", 256))

    @property
    def max_text_tokens(self) -> int:
        """Tokens of text a passage may hold: the sequence limit less [CLS] and [SEP]."""
        return self.max_seq_length - 2

    @cached_property
    def dimension(self) -> int:
        if self.spec.dimension:
            return int(self.spec.dimension)
        if self.own_forward:
            return int(self._numpy_model.dimension)
        return int(self._model.get_sentence_embedding_dimension())

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the exact weights: name plus a hash of the model's config files."""
        h = hashlib.sha256(self.name.encode())
        for f in sorted(self.path.glob("*.json")):
            h.update(f.read_bytes())
        return h.hexdigest()[:16]

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        return tok

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tok = self._tokenizer
        # encode_batch_fast skips the character offsets a count does not need (~15% faster)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]

    @cached_property
    def _model(self):
        """The engine: TorchMiniLM for a plain BERT, else sentence-transformers."""
        if self.own_forward:
            from rag.minilm import TorchMiniLM

            return TorchMiniLM(self._numpy_model, bf16=self.bf16)
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        model.max_seq_length = self.max_seq_length
        return model

    @cached_property
    def _numpy_model(self):
        from rag.minilm import MiniLM, set_blas_threads

        if self.threads:
            set_blas_threads(self.threads)
        return MiniLM(self.path, self.max_seq_length)

    def minilm(self):
        """This model's weights and tokenizer as rag.minilm.MiniLM holds them, loaded once
        (the reader builds on them when it reads with the same model)."""
        return self._numpy_model

    @cached_property
    def own_forward(self) -> bool:
        """A plain mean-pooled BERT, which rag runs with its own forward (rag.minilm)."""
        from rag.minilm import supports

        return supports(self.path)

    @cached_property
    def bf16(self) -> bool:
        """Embedding computes in bfloat16 where the CPU does so natively (AVX512-BF16 or AMX):
        3.3x the chunks per second here, vectors within cosine 0.9999 of float32.
        RAG_EMBED_BF16=0 turns it off, =1 forces it."""
        forced = os.environ.get("RAG_EMBED_BF16")
        if forced in ("0", "1"):
            return forced == "1"
        return cpu_has_bf16()

    @property
    def engine(self) -> str:
        """What computes the vectors: "torch-bf16", "torch-fp32" or "sentence-transformers"."""
        if not self.own_forward:
            return "sentence-transformers"
        return "torch-bf16" if self.bf16 else "torch-fp32"

    def warm(self) -> None:
        """Load the engine now (from another thread, while there is other work); a failure is
        left for the embedding that needs the engine to report."""
        try:
            _ = self._model
        except Exception:  # noqa: BLE001 - reported where the model is used
            pass

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              progress: Callable[[int], None] | None = None,
              lengths: Sequence[int] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text. `lengths`: each text's length in
        tokens, when known (chunks carry theirs), to batch texts of like lengths. A few texts
        (a question, a few sentences) are remembered for the next call."""
        if progress is None and len(texts) <= MEMO_CALL_TEXTS:
            return self._embed_memo(texts)
        return self._embed(texts, batch_size, progress, lengths)

    def embed_with_sentences(self, texts: Sequence[str],
                             spans: Sequence[Sequence[tuple[int, int]]],
                             progress: Callable[[int], None] | None = None,
                             lengths: Sequence[int] | None = None, codes: bool = False
                             ) -> tuple:
        """`embed(texts)`, and a unit vector for each (start, end) span of each text (its
        sentences). rag's own engine reads them out of the same forward pass, each sentence
        in the context of its passage (TorchMiniLM.encode_with_spans); any other model embeds
        the sentences as texts of their own. With `codes`, a third list: each text's token
        codes for late interaction (rag.minilm.token_codes), from rag's own engine alone;
        None for each text of any other model."""
        if self.own_forward:
            model = self._model  # first, as in _embed: a load under way finishes before torch
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            return model.encode_with_spans(texts, spans, progress=progress, codes=codes)
        vectors = self._embed(texts, progress=progress, lengths=lengths)
        sentences = [t[a:b] for t, ss in zip(texts, spans) for a, b in ss]
        flat = self._embed(sentences) if sentences else np.zeros((0, self.dimension),
                                                                 dtype=np.float32)
        parts, at = [], 0
        for ss in spans:
            parts.append(flat[at:at + len(ss)])
            at += len(ss)
        return (vectors, parts, [None] * len(texts)) if codes else (vectors, parts)

    def embed_question(self, text: str) -> tuple[np.ndarray, np.ndarray | None]:
        """`embed([text])[0]`, and the unit states of the question's tokens that late
        interaction reads (rag.minilm.late_tokens), from the same forward pass; None for a
        model rag does not run itself. Remembered, as `embed` remembers a question."""
        memo = self._question_memo
        if text not in memo:
            if not self.own_forward:
                memo[text] = (self.embed([text])[0], None)
            else:
                model = self._model
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                memo[text] = model.encode_question(text)
                if len(self._memo) < MEMO_TEXTS:
                    self._memo.setdefault(text, memo[text][0])
            while len(memo) > QUESTION_MEMO:
                memo.pop(next(iter(memo)))
        return memo[text]

    def late_scores(self, question: np.ndarray, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Each block of passage token codes scored against the question's token states
        (rag.minilm.late_scores)."""
        from rag.minilm import late_scores

        return late_scores(question, blocks, self.bf16)

    @cached_property
    def _question_memo(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        return {}

    def _embed_memo(self, texts: Sequence[str]) -> np.ndarray:
        memo = self._memo
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            if len(memo) + len(missing) > MEMO_TEXTS:
                # forget the others, not this call's own texts: they are read back below
                kept = {t: memo[t] for t in texts if t in memo}
                memo.clear()
                memo.update(kept)
            for t, v in zip(missing, self._embed(missing)):
                memo[t] = v
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack([memo[t] for t in texts])

    @cached_property
    def _memo(self) -> dict[str, np.ndarray]:
        return {}

    def _embed(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None,
               lengths: Sequence[int] | None = None) -> np.ndarray:
        model = self._model
        if self.threads:  # here, not where the model loads: OpenMP counts threads per caller
            import torch

            torch.set_num_threads(self.threads)
        if self.own_forward:  # TorchMiniLM batches by token counts itself
            return model.encode(texts, batch_size=batch_size, progress=progress)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # longest first, as sentence-transformers orders one call: batches of like lengths
        # carry little padding, whichever slice of the list this call is given. By tokens when
        # known: characters per token vary, and padding is counted in tokens (600 SQuAD
        # chunks, one thread: 15.8 s against 18.4 s sorted by characters)
        size = lengths if lengths is not None else [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -size[i])
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            with self._precision():
                vecs = model.encode([texts[j] for j in rows], batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
            out[rows] = vecs
            if progress:
                progress(len(rows))
        if self.bf16:  # renormalise in float32: bfloat16 leaves the norm off by ~1e-3
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _precision(self):
        import contextlib

        import torch

        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


_cache: dict[tuple[str, int], Embedder] = {}


def get_embedder(spec: ModelSpec, threads: int = 0) -> Embedder:
    """One Embedder per model per process."""
    key = (str(spec.path), threads)
    if key not in _cache:
        _cache[key] = Embedder(spec, threads)
    return _cache[key]
