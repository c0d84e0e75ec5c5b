"""The GGUF model behind one method, loaded once per process and lazily.

Prompt style comes from the registry: "chat" uses the chat template stored in the GGUF's own
metadata (never hand-built tokens); "completion" renders a plain prompt file; "auto" (drop-in
models) picks chat when the GGUF carries a template.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag import prompts
from rag.config import Settings, cache_dir, cpu_flags
from rag.errors import ModelNotFound, PromptError
from rag.registry import ModelSpec

# How a prompt is cut into batches (see LLM._prime); part of every cached response's key, as
# the cut can change what a greedy model says.
PROMPT_EVALUATION = "system-message, rest, last-token"


# What llama.cpp logs at error level though it is no error, whole lines matched by their start.
# Every other message is passed on to llama-cpp-python's own handler, as before.
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
    return cache_dir() / "prompt-states"


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class LLM:
    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec = spec
        self.settings = settings
        self.n_ctx = min(settings.n_ctx, spec.n_ctx) if spec.n_ctx else settings.n_ctx

    @cached_property
    def flash_attn(self) -> bool:
        return flash_attention_pays()

    @cached_property
    def _llama(self):
        from llama_cpp import Llama

        filter_llama_logs()
        try:
            with model_defaults(**load_fields()):
                return Llama(
                    model_path=str(self.spec.path),
                    n_ctx=self.n_ctx,
                    n_threads=self.settings.threads,
                    n_threads_batch=self.settings.threads,
                    n_batch=512,
                    seed=self.settings.seed,
                    flash_attn=self.flash_attn,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as e:
            raise ModelNotFound(f"{self.spec.path} could not be loaded by llama.cpp ({e}): "
                                "check that it is a complete GGUF file") from e

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def fingerprint(self) -> str:
        st = os.stat(self.spec.path)
        return f"{self.spec.name}:{st.st_size}:{int(st.st_mtime)}"

    @cached_property
    def chat(self) -> bool:
        if self.spec.prompt_style == "chat":
            return True
        if self.spec.prompt_style == "completion":
            return False
        return bool(self._llama.metadata.get("tokenizer.chat_template"))

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # A ResponseCache (rag/cache.py) the caller may set: `rag eval` does, so an unchanged
    # re-run is answered from disk. None: always generate.
    cache = None

    def generate(self, task: str, values: dict[str, object], max_tokens: int,
                 grammar: str | None = None, stop: list[str] | None = None,
                 on_token: Callable[[str], None] | None = None) -> Generation:
        """Render prompts/{task}.* for this model's prompt style and generate, greedily.
        With `on_token`, the text is also handed over piece by piece as the model writes it
        (a cached response is handed over whole)."""
        params = dict(max_tokens=max_tokens, temperature=self.settings.temperature,
                      top_k=1, top_p=1.0, repeat_penalty=1.0, seed=self.settings.seed,
                      stop=stop or [])
        t0 = time.perf_counter()
        request = self._request(task, values)
        key = None
        if self.cache is not None:
            key = self._cache_key(request, params, grammar)
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("text"), str):
                if on_token is not None:
                    on_token(hit["text"])
                return Generation(text=hit["text"], prompt_tokens=hit.get("prompt_tokens", 0),
                                  completion_tokens=hit.get("completion_tokens", 0),
                                  seconds=time.perf_counter() - t0)
        from llama_cpp import LlamaGrammar

        llama = self._llama
        compiled = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
        if self.can_score:
            prompt, _, fixed = self._prompt_and_end(task, values)
            self._prime(prompt, fixed)
        plain = self._plain_text_prompt(request)
        if on_token is not None:
            gen = self._stream(request, params, compiled, on_token, t0, plain)
        else:
            if plain is not None:
                out = llama.create_completion(prompt=plain, **params, grammar=compiled)
                text = out["choices"][0]["text"]
            elif "messages" in request:
                out = llama.create_chat_completion(**request, **params, grammar=compiled)
                text = out["choices"][0]["message"]["content"] or ""
            else:
                out = llama.create_completion(**request, **params, grammar=compiled)
                text = out["choices"][0]["text"]
            usage = out.get("usage", {})
            gen = Generation(text=text.strip(), prompt_tokens=usage.get("prompt_tokens", 0),
                             completion_tokens=usage.get("completion_tokens", 0),
                             seconds=time.perf_counter() - t0)
        if key is not None:
            self.cache.put(key, {"text": gen.text, "prompt_tokens": gen.prompt_tokens,
                                 "completion_tokens": gen.completion_tokens})
        return gen

    def _request(self, task: str, values: dict[str, object]) -> dict:
        pdir = self.settings.prompts_dir
        if self.chat:
            return {"messages": [
                {"role": "system", "content": prompts.render_file(pdir, f"{task}.system.txt",
                                                                  values)},
                {"role": "user", "content": prompts.render_file(pdir, f"{task}.user.txt",
                                                                values)},
            ]}
        return {"prompt": prompts.render_file(pdir, f"{task}.completion.txt", values)}

    @cached_property
    def can_score(self) -> bool:
        """Whether score_continuations can render this model's prompt exactly as generation
        does: a completion prompt, or a chat template taken from the GGUF's metadata."""
        return not self.chat or self._llama.chat_format == "chat_template.default"

    def score_continuations(self, task: str, values: dict[str, object], texts: list[str],
                            cuts: list[list[int]]) -> list[list[tuple[int, float]]]:
        """How likely the model is to answer with each of `texts`, cut at each of its offsets in
        `cuts`: for each text, one (offset, log-probability) per cut that falls between tokens,
        where the log-probability is that of the text's tokens up to the cut followed by the
        end of the answer. The model reads; it writes nothing. (Greedy generation by a 135M
        model tends to restate the question; asked which run of the evidence it would say, it
        chooses well.)

        The prompt is evaluated once (reusing the context's matching prefix), each text is
        evaluated after it in one batch, and the context is left holding the prompt."""
        import numpy as np

        llama = self._llama
        prompt, end_ids, fixed = self._prompt_and_end(task, values)
        if len(prompt) >= self.n_ctx - 8:
            return [[] for _ in texts]
        self._prime(prompt, fixed)
        # the prompt's last token, alone, as generation evaluates it
        first = self._decode(prompt[-1:], len(prompt) - 1, last_only=True)[0]
        llama.input_ids[len(prompt) - 1] = prompt[-1]
        pieces = [llama.tokenize(t.encode("utf-8"), add_bos=False, special=False)
                  for t in texts]
        out = []
        for text, toks, text_cuts in zip(texts, pieces, cuts):
            toks = toks[: self.n_ctx - len(prompt) - 1]
            if not toks:
                out.append([])
                continue
            rows = self._decode(toks, len(prompt))
            logits = np.vstack([first[None, :], rows])  # row t predicts token t
            logp = logits - logits.max(axis=1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
            token_lp = np.cumsum(logp[np.arange(len(toks)), toks])
            ends = []
            for cut in text_cuts:
                head = llama.tokenize(text[:cut].encode("utf-8"), add_bos=False, special=False)
                n = len(head)
                if n == 0 or n > len(toks) or head != toks[:n]:
                    continue  # the cut is not a token boundary here
                end_lp = float(np.logaddexp.reduce(logp[n, end_ids]))
                ends.append((cut, float(token_lp[n - 1]) + end_lp))
            out.append(ends)
        llama.n_tokens = len(prompt)
        return out

    def _prompt_and_end(self, task: str, values: dict[str, object]
                        ) -> tuple[list[int], list[int], int]:
        """The prompt's tokens exactly as llama-cpp-python will tokenize them, the tokens that
        end an answer, and how many of the prompt's first tokens are the same for every
        question (the system message; 0 for a completion prompt)."""
        llama = self._llama
        request = self._request(task, values)
        if "messages" in request:
            fmt = self._formatter
            res = fmt(messages=request["messages"])
            tokens = self._chat_tokens(request["messages"], res)
            stops = [res.stop] if isinstance(res.stop, str) else list(res.stop or [])
            end = {llama.token_eos()}
            for stop in stops:
                ids = llama.tokenize(stop.encode("utf-8"), add_bos=False, special=True)
                if len(ids) == 1:
                    end.add(ids[0])
            marker = "\u2063\u2063"
            probe = fmt(messages=[request["messages"][0],
                                  {"role": "user", "content": marker}]).prompt
            fixed_text = probe[:probe.find(marker)] if marker in probe else ""
            fixed_ids = llama.tokenize(fixed_text.encode("utf-8"),
                                       add_bos=not res.added_special, special=True)
            fixed = 0
            while fixed < min(len(fixed_ids), len(tokens)) and \
                    fixed_ids[fixed] == tokens[fixed]:
                fixed += 1
            return tokens, sorted(end), fixed
        tokens = llama.tokenize(request["prompt"].encode("utf-8"), add_bos=True, special=False)
        newline = llama.tokenize(b"\n", add_bos=False, special=False)
        return tokens, sorted({llama.token_eos(), *newline[-1:]}), 0

    def _chat_tokens(self, messages: list[dict], res) -> list[int]:
        """A rendered chat prompt's tokens, the messages' contents read as plain text: a
        document that says "<|im_end|><|im_start|>system" gives those characters' tokens, not
        the model's control tokens. Where no content holds such a text (nearly always), the
        tokens are those of the whole prompt read with special tokens, as before."""
        llama = self._llama
        whole = llama.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special,
                               special=True)

        def special(text: str) -> bool:
            data = text.encode("utf-8")
            return llama.tokenize(data, add_bos=False, special=True) != \
                llama.tokenize(data, add_bos=False, special=False)

        if not any(special(m["content"]) for m in messages):
            return whole
        # the template's own text (role markers) with special tokens, each content as text
        markers = [f"\u2063{i}\u2063" for i in range(len(messages))]
        probe = self._formatter(messages=[{**m, "content": mark}
                                          for m, mark in zip(messages, markers)]).prompt
        tokens: list[int] = []
        at = 0
        for i, (m, mark) in enumerate(zip(messages, markers)):
            k = probe.find(mark, at)
            content = m["content"] if m["content"] in res.prompt else m["content"].strip()
            if k < 0:  # a template that rewrites contents: all of it as plain text
                return llama.tokenize(res.prompt.encode("utf-8"),
                                      add_bos=not res.added_special, special=False)
            tokens += llama.tokenize(probe[at:k].encode("utf-8"),
                                     add_bos=i == 0 and not res.added_special, special=True)
            tokens += llama.tokenize(content.encode("utf-8"), add_bos=False, special=False)
            at = k + len(mark)
        return tokens + llama.tokenize(probe[at:].encode("utf-8"), add_bos=False, special=True)

    def _plain_text_prompt(self, request: dict) -> list[int] | None:
        """The chat prompt's tokens when reading its contents as plain text changes them
        (`_chat_tokens`), to be generated from as tokens; None when llama-cpp-python's own
        reading of the prompt is the same."""
        llama = self._llama
        if "messages" not in request:
            data = request["prompt"].encode("utf-8")
            tokens = llama.tokenize(data, add_bos=True, special=False)
            return None if tokens == llama.tokenize(data, add_bos=True, special=True) \
                else tokens
        res = self._formatter(messages=request["messages"])
        tokens = self._chat_tokens(request["messages"], res)
        whole = llama.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special,
                               special=True)
        return None if tokens == whole else tokens

    def _prime(self, prompt: list[int], fixed: int) -> None:
        """Leave the context holding the prompt less its last token, evaluated the same way
        whatever came before: the fixed system message as one batch (kept from the last
        question when it is already there), the rest as the next. llama-cpp-python then
        evaluates the last token and samples. llama.cpp's sums depend on how a prompt is cut
        into batches, and a greedy choice can tip on them: evaluated this way the same
        question gets the same answer in `rag ask`, `rag eval` and `rag chat`, after any other
        question. (Only for a prompt _prompt_and_end reproduces exactly: see can_score.)"""
        llama = self._llama
        if len(prompt) < 2 or len(prompt) > self.n_ctx:
            return
        fixed = min(fixed, len(prompt) - 1)
        kept = fixed > 0 and llama.n_tokens >= fixed and \
            list(llama.input_ids[:fixed]) == prompt[:fixed]
        if not kept and fixed and self._restore_state(prompt[:fixed]):
            llama.input_ids[:fixed] = prompt[:fixed]
            kept = True
        start = fixed if kept else 0
        pieces = [] if kept else ([prompt[:fixed]] if fixed else [])
        pieces.append(prompt[fixed:len(prompt) - 1])
        for n, piece in enumerate(pieces):
            for i in range(0, len(piece), llama.n_batch):
                batch = piece[i:i + llama.n_batch]
                if batch:
                    self._decode(batch, start, last_only=True)
                    llama.input_ids[start:start + len(batch)] = batch
                    start += len(batch)
            if n == 0 and not kept and fixed:
                self._save_state(prompt[:fixed])
        llama.n_tokens = start

    def _state_path(self, fixed: list[int]) -> Path:
        """The file for this model, build, load and prompt: any change is another file."""
        import hashlib

        import llama_cpp

        key = json.dumps([self.fingerprint, llama_cpp.__version__, self.n_ctx, self.flash_attn,
                          load_fields(), self._llama.n_batch, fixed])
        return state_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.bin"

    def _restore_state(self, fixed: list[int]) -> bool:
        """The context holding `fixed` as evaluated before, from disk; False (and the context
        empty) when there is no such file or it is damaged: then it is evaluated."""
        import ctypes
        import hashlib

        import llama_cpp

        try:
            blob = self._state_path(fixed).read_bytes()
        except OSError:
            return False
        head, digest, data = blob[:len(STATE_MAGIC)], blob[len(STATE_MAGIC):][:32], \
            blob[len(STATE_MAGIC) + 32:]
        if head != STATE_MAGIC or hashlib.sha256(data).digest() != digest:
            return False
        ctx = self._llama._ctx
        ctx.kv_cache_seq_rm(-1, 0, -1)
        src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(ctx.ctx, src, len(data), 0) != len(data):
            ctx.kv_cache_seq_rm(-1, 0, -1)
            return False
        return True

    def _save_state(self, fixed: list[int]) -> None:
        """Write the context's state (holding exactly `fixed`) for the next process: atomically,
        the oldest files beyond STATE_FILES_KEPT removed; a failure only costs the next
        process the evaluation."""
        import ctypes
        import hashlib

        import llama_cpp

        path = self._state_path(fixed)
        ctx = self._llama._ctx.ctx
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

    @cached_property
    def _formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._llama
        eos, bos = llama.token_eos(), llama.token_bos()
        return Jinja2ChatFormatter(
            template=llama.metadata["tokenizer.chat_template"],
            eos_token=llama._model.token_get_text(eos) if eos >= 0 else "",
            bos_token=llama._model.token_get_text(bos) if bos >= 0 else "",
            stop_token_ids=[eos])

    def _decode(self, tokens: list[int], n_past: int, last_only: bool = False):
        """Evaluate `tokens` at positions n_past... (dropping whatever the context held from
        n_past on) and return their logits, one row per token (the last row alone with
        last_only)."""
        import numpy as np

        llama = self._llama
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

    def _stream(self, request: dict, params: dict, compiled, on_token: Callable[[str], None],
                t0: float, plain: list[int] | None = None) -> Generation:
        # A streamed response carries no usage: each chunk is one token, and the context then
        # holds the prompt and the tokens evaluated after it.
        llama = self._llama
        if plain is not None:
            chunks = llama.create_completion(prompt=plain, **params, grammar=compiled,
                                             stream=True)
            request = {"prompt": plain}
        elif "messages" in request:
            chunks = llama.create_chat_completion(**request, **params, grammar=compiled,
                                                  stream=True)
        else:
            chunks = llama.create_completion(**request, **params, grammar=compiled, stream=True)
        pieces: list[str] = []
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = (choice.get("delta") or {}).get("content") if "messages" in request \
                else choice.get("text")
            if piece:
                pieces.append(piece)
                on_token(piece)
        n = len(pieces)
        return Generation(text="".join(pieces).strip(),
                          prompt_tokens=max(0, llama.n_tokens - n), completion_tokens=n,
                          seconds=time.perf_counter() - t0)

    def _cache_key(self, request: dict, params: dict, grammar: str | None) -> str:
        """Everything that decides the output: the model file, the llama.cpp build, the
        context size, flash attention, the rendered prompt, the grammar and every sampling
        parameter."""
        from importlib.metadata import PackageNotFoundError, version

        from rag.cache import cache_key

        try:
            runtime = version("llama_cpp_python")
        except PackageNotFoundError:
            runtime = "unknown"
        return cache_key(model=self.fingerprint, runtime=runtime, n_ctx=self.n_ctx,
                         flash_attn=self.flash_attn,
                         request=request, params=params, grammar=grammar,
                         evaluation=PROMPT_EVALUATION if self.can_score else "llama-cpp-python")


_cache: dict[tuple[str, int, int], LLM] = {}


def get_llm(spec: ModelSpec, settings: Settings) -> LLM:
    """One loaded model per file per process."""
    key = (str(spec.path), settings.n_ctx, settings.threads)
    if key not in _cache:
        _cache[key] = LLM(spec, settings)
    return _cache[key]


# Room for what rendering does not show: the chat template's role markers, BOS, a margin.
TEMPLATE_MARGIN_TOKENS = 48


def fit_to_context(llm: LLM, task: str, values: dict[str, object], max_tokens: int,
                   cut: str = "question") -> tuple[dict[str, object], str | None]:
    """`values` with values[cut] shortened from its end, at a word boundary, so that the
    rendered prompt plus `max_tokens` of answer fit the model's context; and a note saying what
    was cut, or None when nothing was. Call it before generate() whenever a value can be of any
    size (a pasted question): llama.cpp refuses a prompt longer than its context."""
    budget = llm.n_ctx - max_tokens - TEMPLATE_MARGIN_TOKENS
    text = str(values.get(cut, ""))
    used = _prompt_tokens(llm, task, {**values, cut: text})
    if used <= budget:
        return values, None
    before = llm.count_tokens(text)
    for _ in range(8):
        if used <= budget or not text:
            break
        own = llm.count_tokens(text)
        keep = max(0, own - (used - budget))
        # cut in characters, in proportion, then back to the last word boundary
        end = int(len(text) * keep / max(1, own) * 0.95)
        space = text.rfind(" ", 0, end + 1)
        text = text[:space if space > 0 else end].rstrip()
        used = _prompt_tokens(llm, task, {**values, cut: text})
    if used > budget:
        raise PromptError(f"the {task!r} prompt needs {used} tokens even without its {cut}; "
                          f"the model's context holds {llm.n_ctx}: use a model with a larger "
                          "context (--model)")
    note = (f"the {cut} was cut from {before} to {llm.count_tokens(text)} tokens to fit the "
            f"model's {llm.n_ctx}-token context")
    return {**values, cut: text}, note


def _prompt_tokens(llm: LLM, task: str, values: dict[str, object]) -> int:
    pdir = llm.settings.prompts_dir
    names = [f"{task}.system.txt", f"{task}.user.txt"] if llm.chat else \
        [f"{task}.completion.txt"]
    return sum(llm.count_tokens(prompts.render_file(pdir, name, values)) for name in names)
