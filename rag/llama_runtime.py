"""llama.cpp as rag runs it: the parameters every model is loaded with (flash attention where
it pays, AMX kernels off where they crash), a filter for log lines that are no errors, the
evaluated state of a fixed prompt kept on disk, and evaluating tokens for their logits.
rag.llm's LLM uses these; the benches load models with the same parameters."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from rag.config import cache_dir, cpu_flags

# What llama.cpp logs at error level though it is no error, whole lines matched by their start.
# Every other message is passed on to llama-cpp-python's own handler.
NOT_ERRORS = (
    # a model with sliding-window attention (Gemma 3) given the full-size cache rag's n_ctx
    # asks for: printed on every Gemma load, it read to users as a failure
    b"llama_kv_cache_iswa: using full-size SWA cache",
)
_log_filter = None


def filter_llama_logs() -> None:
    """Install, once, the log handler that drops NOT_ERRORS. llama.cpp keeps only a pointer to
    it, so the module keeps the handler itself alive."""
    global _log_filter
    if _log_filter is not None:
        return
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    passing = _logger.llama_log_callback

    @llama_cpp.llama_log_callback
    def handler(level, text, user_data):
        if text and text.startswith(NOT_ERRORS):
            return
        passing(level, text, user_data)

    llama_cpp.llama_log_set(handler, ctypes.c_void_p(0))
    _log_filter = handler


def amx_crashes() -> bool:
    """Whether llama.cpp's AMX kernels would run here, which crash it. On a Xeon with AMX the
    llama-cpp-python 0.3.36 that pip builds (natively, so with those kernels) dies of a
    segmentation fault in the first decode of SmolLM2 (Q4_1) and of a Q8_0 model, and answers
    normally with its "extra" weight buffers (AMX, repacked layouts) off."""
    return "amx_int8" in cpu_flags()


def load_fields() -> dict[str, object]:
    """The llama.cpp model parameters every model is loaded with here (rag's own and the
    benches' alike) that Llama() takes no argument for."""
    return {"use_extra_bufts": not amx_crashes()}


def flash_attention_pays() -> bool:
    """Flash attention where it was measured to speed answers up: on AMD EPYC cores prompt and
    decode ran 5-20% faster with it; on an Intel Xeon with AMX decode ran at 66 tokens/s with
    it against 85 without (SmolLM2, 2 threads, a 240-token prompt; prompt speed +4%), and an
    answer is mostly decode (seeds eval p50 0.93 s with, 0.77 s without). RAG_FLASH_ATTN=0/1
    decides instead."""
    forced = os.environ.get("RAG_FLASH_ATTN")
    if forced in ("0", "1"):
        return forced == "1"
    return "amx_int8" not in cpu_flags()


_params_lock = threading.Lock()


@contextlib.contextmanager
def model_defaults(**fields):
    """Llama() takes no argument for some of llama.cpp's model parameters: have the defaults it
    starts from carry `fields` while it loads a model (one load at a time)."""
    import llama_cpp.llama as high_level

    low_level = high_level.llama_cpp
    with _params_lock:
        defaults = low_level.llama_model_default_params

        def patched():
            params = defaults()
            for name, value in fields.items():
                setattr(params, name, value)
            return params

        low_level.llama_model_default_params = patched
        try:
            yield
        finally:
            low_level.llama_model_default_params = defaults


# The fixed system message's evaluated state (llama.cpp's cache of keys and values for it) is
# kept on disk, so a new process restores it in milliseconds instead of evaluating ~165 tokens
# again (0.5 s on two quiet cores here, 1.2 s on one busy one: a third of a cold `rag ask`'s
# answer). Restored, the state is the same bytes, so the answer is the same (tested). It holds
# only the system prompt, never a document or a question.
STATE_MAGIC = b"rag-kv-state-1\n"
STATE_FILES_KEPT = 8  # one per model and prompt version; ~4 MB each for SmolLM2


def state_dir() -> Path:
    """Where the evaluated states are kept (the user's cache)."""
    return cache_dir() / "prompt-states"


def restore_state(llama, path: Path) -> bool:
    """The context of `llama` holding what it held when `save_state` wrote `path`; False (and
    the context empty) when there is no such file or it is damaged."""
    import ctypes
    import hashlib

    import llama_cpp

    try:
        blob = path.read_bytes()
    except OSError:
        return False
    head, digest, data = blob[:len(STATE_MAGIC)], blob[len(STATE_MAGIC):][:32], \
        blob[len(STATE_MAGIC) + 32:]
    if head != STATE_MAGIC or hashlib.sha256(data).digest() != digest:
        return False
    ctx = llama._ctx
    ctx.kv_cache_seq_rm(-1, 0, -1)
    src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if llama_cpp.llama_state_seq_set_data(ctx.ctx, src, len(data), 0) != len(data):
        ctx.kv_cache_seq_rm(-1, 0, -1)
        return False
    return True


def save_state(llama, path: Path) -> None:
    """Write the state of `llama`'s context to `path` for the next process: atomically, the
    oldest files beyond STATE_FILES_KEPT removed; a failure only costs the next process the
    evaluation."""
    import ctypes
    import hashlib

    import llama_cpp

    ctx = llama._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    data = bytes(buf[:llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)])
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(STATE_MAGIC + hashlib.sha256(data).digest() + data)
        os.replace(tmp, path)
        files = sorted(path.parent.glob("*.bin"), key=lambda f: f.stat().st_mtime)
        for old in files[:-STATE_FILES_KEPT]:
            old.unlink(missing_ok=True)
    except OSError:
        tmp.unlink(missing_ok=True)


def decode(llama, tokens: list[int], n_past: int, last_only: bool = False):
    """Have `llama` evaluate `tokens` at positions n_past... (dropping whatever the context
    held from n_past on) and return their logits, one row per token (the last row alone with
    last_only)."""
    import numpy as np

    ctx = llama._ctx
    ctx.kv_cache_seq_rm(-1, n_past, -1)
    llama._batch.set_batch(batch=tokens, n_past=n_past, logits_all=not last_only)
    ctx.decode(llama._batch)
    n_rows = 1 if last_only else len(tokens)
    vocab = llama.n_vocab()
    if last_only:
        ptr = ctx.get_logits_ith(len(tokens) - 1)
    else:
        ptr = ctx.get_logits()
    return np.ctypeslib.as_array(ptr, shape=(n_rows * vocab,)).reshape(n_rows, vocab).copy()
