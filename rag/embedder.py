"""The embedding model behind one method, loaded once and lazily.

Token counting uses the model's own fast tokenizer (tokenizers, no torch), so chunking
and `rag --help` never pay for importing torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np

from rag.registry import ModelSpec


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
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts),
                                                                  add_special_tokens=False)]

    @cached_property
    def _model(self):
        import torch
        from sentence_transformers import SentenceTransformer

        if self.threads:
            torch.set_num_threads(self.threads)
        model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        model.max_seq_length = self.max_seq_length
        return model

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            batch = list(texts[i:i + batch_size])
            out[i:i + len(batch)] = self._model.encode(
                batch, batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False)
            if progress:
                progress(len(batch))
        return out


_cache: dict[tuple[str, int], Embedder] = {}


def get_embedder(spec: ModelSpec, threads: int = 0) -> Embedder:
    """One Embedder per model per process."""
    key = (str(spec.path), threads)
    if key not in _cache:
        _cache[key] = Embedder(spec, threads)
    return _cache[key]
