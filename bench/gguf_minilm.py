"""An experiment measured for issue #8, not used by rag: the query encoder on llama.cpp, the
sentence-transformers BERT of rag/minilm.py written once as a GGUF file and run by the
llama.cpp that llama-cpp-python already ships for the LLM.

numpy spends a short question's ~13 ms in OpenBLAS packing 42 MB of weights for 14-row
products; llama.cpp's CPU kernels multiply the weights in place. Measured on one thread
(bench/query_encoder.py, SQuAD questions): F32 weights 1.2x faster than numpy, F16 1.5x,
BF16 1.9x; nowhere near the ~2 ms a 14-token pass would take at the core's float32 peak.

- `build_gguf` writes the model.safetensors weights as GGUF v3 (the format is written here
  directly, no `gguf` package) with llama.cpp's names and metadata for architecture "bert".
  The file is a cache, not a source: `gguf_path` names it after the weights and this writer's
  version, and `ensure_gguf` writes it on first use (deterministic, well under a second).
- The text is tokenized by the model's own tokenizer.json (HF `tokenizers`), exactly as
  rag/minilm.py and sentence-transformers do ([CLS] ... [SEP], truncated to the sequence limit);
  llama.cpp only sees the ids. The GGUF therefore carries no vocabulary ("no_vocab" with
  `bert.vocab_size` placeholder tokens), which keeps it smaller and its load faster.
- llama.cpp pools (mean over the sequence's tokens); the vector is L2-normalised here.

Differences from sentence-transformers that remain: ggml's GELU (ggml_gelu) is the tanh
approximation where BERT's is exact erf, and with F16/BF16/Q8_0 weights the activations are
rounded to that type inside each product. Cosine to the numpy encoder (sentence-transformers' to
float32 rounding) over 200 SQuAD questions and 50 paragraphs cut at 250 tokens: F32 and F16
>= 0.999997, BF16 >= 0.99998, Q8_0 only >= 0.9994 (bench/query_encoder.py); F32 and F16 against
sentence-transformers itself: tests/test_gguf_minilm.py.

Nothing here imports llama_cpp at module level (`rag ask` imports nothing heavy until it must).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Bump whenever the bytes written for the same weights change: older files are then not found.
WRITER_VERSION = 1
ALIGNMENT = 32

# GGUF metadata value types
_U32, _I32, _F32, _BOOL, _STR, _ARR = 4, 5, 6, 7, 8, 9
# ggml tensor types and the matching llama_ftype (general.file_type)
GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
QK8_0 = 32
LLAMA_POOLING_TYPE_MEAN = 1


def cache_dir() -> Path:
    from rag.config import cache_dir as rag_cache

    return rag_cache() / "gguf"


def weights_id(model_path: Path) -> str:
    """Identifies the weights cheaply (no 90 MB read): the safetensors header (names, dtypes,
    shapes, offsets), the file's size and mtime, config.json, and this writer's version."""
    st = model_path / "model.safetensors"
    h = hashlib.sha256(f"gguf-minilm-v{WRITER_VERSION}".encode())
    with open(st, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h.update(f.read(n))
    stat = st.stat()
    h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    h.update((model_path / "config.json").read_bytes())
    return h.hexdigest()[:16]


def gguf_path(model_path: Path, dtype: str = "f32", directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"minilm-{weights_id(model_path)}-{dtype}.gguf"


def ensure_gguf(model_path: Path, dtype: str = "f32", directory: Path | None = None) -> Path:
    """The GGUF for these weights, written first if it is not in the cache yet."""
    out = gguf_path(model_path, dtype, directory)
    if not out.exists():
        build_gguf(model_path, out, dtype)
    return out


# ---------------------------------------------------------------------------------------------
# GGUF writing


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, vtype: int, value) -> bytes:
    out = _str(key) + struct.pack("<I", vtype)
    if vtype == _STR:
        return out + _str(value)
    if vtype == _U32:
        return out + struct.pack("<I", value)
    if vtype == _I32:
        return out + struct.pack("<i", value)
    if vtype == _F32:
        return out + struct.pack("<f", value)
    if vtype == _BOOL:
        return out + struct.pack("<?", value)
    raise ValueError(vtype)


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (ggml_compute_fp32_to_bf16)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> 16) | np.uint32(64)).astype(np.uint16), rounded)


def _to_q8_0(x: np.ndarray) -> np.ndarray:
    """float32 rows -> Q8_0 blocks (ggml quantize_row_q8_0_ref): per 32 values a float16 scale
    amax/127 and 32 int8, rounded half away from zero."""
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, QK8_0)
    d = np.abs(blocks).max(axis=1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    v = blocks * inv[:, None]
    qs = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", (QK8_0,))])
    out["d"] = d.astype(np.float16)
    out["qs"] = qs
    return out


def _encode_tensor(arr: np.ndarray, dtype: str) -> tuple[int, np.ndarray]:
    if dtype == "f32":
        return GGML_TYPES["f32"], np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "f16":
        return GGML_TYPES["f16"], arr.astype(np.float16)
    if dtype == "bf16":
        return GGML_TYPES["bf16"], _to_bf16(arr)
    if dtype == "q8_0":
        return GGML_TYPES["q8_0"], _to_q8_0(arr)
    raise ValueError(f"unknown GGUF dtype {dtype!r}; use one of {', '.join(GGML_TYPES)}")


def _bert_tensors(model_path: Path) -> tuple[dict, list[tuple[str, np.ndarray, bool]]]:
    """config.json and (llama.cpp name, float32 array, is a weight matrix) in file order."""
    from safetensors.numpy import load_file

    cfg = json.loads((model_path / "config.json").read_text())
    w = load_file(str(model_path / "model.safetensors"))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

    def g(name: str) -> np.ndarray:
        return w[prefix + name]

    tensors = [
        ("token_embd.weight", g("embeddings.word_embeddings.weight"), True),
        ("token_types.weight", g("embeddings.token_type_embeddings.weight"), False),
        ("position_embd.weight", g("embeddings.position_embeddings.weight"), False),
        ("token_embd_norm.weight", g("embeddings.LayerNorm.weight"), False),
        ("token_embd_norm.bias", g("embeddings.LayerNorm.bias"), False),
    ]
    names = [
        ("attn_q", "attention.self.query"), ("attn_k", "attention.self.key"),
        ("attn_v", "attention.self.value"), ("attn_output", "attention.output.dense"),
        ("attn_output_norm", "attention.output.LayerNorm"), ("ffn_up", "intermediate.dense"),
        ("ffn_down", "output.dense"), ("layer_output_norm", "output.LayerNorm"),
    ]
    for i in range(int(cfg["num_hidden_layers"])):
        for ours, theirs in names:
            matrix = not ours.endswith("_norm")
            tensors.append((f"blk.{i}.{ours}.weight",
                            g(f"encoder.layer.{i}.{theirs}.weight"), matrix))
            tensors.append((f"blk.{i}.{ours}.bias", g(f"encoder.layer.{i}.{theirs}.bias"), False))
    return cfg, tensors


def build_gguf(model_path: Path, out: Path, dtype: str = "f32") -> Path:
    """Write the BERT weights of a sentence-transformers folder as a GGUF v3 file for llama.cpp
    architecture "bert" (mean pooling, non-causal). Weight matrices (and the token embeddings)
    are stored as `dtype`; norms, biases, position and token-type embeddings stay float32.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    if dtype not in GGML_TYPES:
        raise ValueError(f"unknown GGUF dtype {dtype!r}; use one of {', '.join(GGML_TYPES)}")
    cfg, tensors = _bert_tensors(model_path)
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise ValueError(f"{model_path}: not a plain BERT with gelu")
    a = "bert"
    kvs = [
        _kv("general.architecture", _STR, a),
        _kv("general.name", _STR, model_path.name if model_path.name != "model"
            else model_path.parent.name),
        _kv("general.file_type", _U32, FILE_TYPES[dtype]),
        _kv("general.alignment", _U32, ALIGNMENT),
        _kv(f"{a}.context_length", _U32, int(cfg["max_position_embeddings"])),
        _kv(f"{a}.embedding_length", _U32, int(cfg["hidden_size"])),
        _kv(f"{a}.feed_forward_length", _U32, int(cfg["intermediate_size"])),
        _kv(f"{a}.block_count", _U32, int(cfg["num_hidden_layers"])),
        _kv(f"{a}.attention.head_count", _U32, int(cfg["num_attention_heads"])),
        _kv(f"{a}.attention.layer_norm_epsilon", _F32, float(cfg.get("layer_norm_eps", 1e-12))),
        _kv(f"{a}.attention.causal", _BOOL, False),
        _kv(f"{a}.pooling_type", _U32, LLAMA_POOLING_TYPE_MEAN),
        _kv(f"{a}.vocab_size", _U32, int(cfg["vocab_size"])),
        # token ids come from tokenizer.json: llama.cpp gets placeholder tokens, no tokenizer
        _kv("tokenizer.ggml.model", _STR, "no_vocab"),
        _kv("tokenizer.ggml.token_type_count", _U32, int(cfg.get("type_vocab_size", 2))),
    ]
    infos, blobs, offset = [], [], 0
    for name, arr, matrix in tensors:
        if matrix and dtype != "f32":
            gtype, data = _encode_tensor(arr, dtype)
        else:
            gtype, data = _encode_tensor(arr, "f32")
        dims = tuple(reversed(arr.shape))  # ggml ne0 is the innermost (row) dimension
        infos.append(_str(name) + struct.pack("<I", len(dims))
                     + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", gtype, offset))
        blobs.append(data)
        offset += -(-data.nbytes // ALIGNMENT) * ALIGNMENT
    header = (b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
              + b"".join(kvs) + b"".join(infos))
    header += b"\0" * (-len(header) % ALIGNMENT)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for data in blobs:
                f.write(memoryview(data).cast("B"))
                f.write(b"\0" * (-data.nbytes % ALIGNMENT))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------
# Encoding

# ggml's log levels in the vendored llama.cpp (llama-cpp-python's own table predates DEBUG=1 and
# so prints every warning, e.g. "adding 30522 dummy tokens" for a GGUF without vocabulary)
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5


@contextlib.contextmanager
def _quiet_llama():
    """Collect llama.cpp's error lines instead of printing its load chatter, then give logging
    back to llama-cpp-python's handler."""
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    errors: list[str] = []
    last = [0]

    @llama_cpp.llama_log_callback
    def collect(level, text, _user_data):
        if level != _GGML_LOG_CONT:
            last[0] = level
        if last[0] == _GGML_LOG_ERROR:
            errors.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


class GGUFMiniLM:
    """Same interface as rag.minilm.MiniLM: `encode(texts)` -> float32 unit vectors."""

    def __init__(self, path: Path, max_seq_length: int = 256, dtype: str = "f32",
                 threads: int = 1, gguf: Path | None = None, flash_attn: bool = False):
        import llama_cpp
        from tokenizers import Tokenizer

        from rag.llm import load_fields

        cfg = json.loads((path / "config.json").read_text())
        modules = json.loads((path / "modules.json").read_text())
        self.normalize = any(m["type"].endswith("Normalize") for m in modules)
        self.max_len = min(int(max_seq_length), int(cfg["max_position_embeddings"]))
        self.dimension = int(cfg["hidden_size"])
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(self.max_len)
        self.tokenizer = tok
        self.gguf = gguf or ensure_gguf(path, dtype)

        self._ll = llama_cpp
        llama_cpp.llama_backend_init()
        with _quiet_llama() as errors:
            mparams = llama_cpp.llama_model_default_params()
            mparams.n_gpu_layers = 0
            for name, value in load_fields().items():  # as rag.llm loads its models
                setattr(mparams, name, value)
            model = llama_cpp.llama_model_load_from_file(str(self.gguf).encode(), mparams)
            if not model:
                raise RuntimeError(f"llama.cpp could not load {self.gguf}: {''.join(errors)}")
            self._model = model
            self._ctx = self._new_context(llama_cpp, model, threads, flash_attn)
            if not self._ctx:
                raise RuntimeError(f"llama.cpp could not create a context for {self.gguf}: "
                                   f"{''.join(errors)}")
        # one batch, reused: every token in sequence 0, at position i, and an output
        batch = llama_cpp.llama_batch_init(self.max_len, 0, 1)
        for i in range(self.max_len):
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        self._batch = batch
        self._tokens = np.ctypeslib.as_array(batch.token, shape=(self.max_len,))

    def _new_context(self, llama_cpp, model, threads: int, flash_attn: bool):
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = self.max_len
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = int(threads)
        cparams.embeddings = True
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        cparams.attention_type = llama_cpp.LLAMA_ATTENTION_TYPE_NON_CAUSAL
        # flash attention: same vectors here, ~25% less time on 150-250-token passages, none on
        # a short question (bench/query_encoder.py)
        cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                   else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cparams.no_perf = True
        return llama_cpp.llama_init_from_model(model, cparams)

    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        with _quiet_llama():  # freeing a context logs its buffer sizes as a warning
            if getattr(self, "_ctx", None):
                ll.llama_free(self._ctx)
                self._ctx = None
            if getattr(self, "_model", None):
                ll.llama_model_free(self._model)
                self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def encode_ids(self, ids: Sequence[int]) -> np.ndarray:
        """The pooled (not normalised) vector of one sequence of token ids."""
        n = len(ids)
        if not 0 < n <= self.max_len:
            raise ValueError(f"{n} tokens: expected 1..{self.max_len}")
        self._tokens[:n] = ids
        self._batch.n_tokens = n
        rc = self._ll.llama_encode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_encode failed ({rc})")
        ptr = self._ll.llama_get_embeddings_seq(self._ctx, 0)
        if not ptr:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        return np.ctypeslib.as_array(ptr, shape=(self.dimension,)).copy()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 sentence vectors, one row per text, unit length when the model normalises."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not len(texts):
            return out
        if len(texts) == 1:
            encodings = [self.tokenizer.encode(texts[0])]
        else:
            encodings = self.tokenizer.encode_batch(list(texts))
        for i, e in enumerate(encodings):
            out[i] = self.encode_ids(e.ids)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
