"""The GGUF model behind one method, loaded once per process and lazily.

Prompt style comes from the registry: "chat" uses the chat template stored in the GGUF's own
metadata (never hand-built tokens); "completion" renders a plain prompt file; "auto" (drop-in
models) picks chat when the GGUF carries a template. How a prompt becomes tokens is
rag.prompt_tokens'; how llama.cpp is loaded and driven, rag.llama_runtime's.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rag.config import Settings
from rag.errors import ModelNotFound
from rag.llama_runtime import (
    decode,
    filter_llama_logs,
    flash_attention_pays,
    load_fields,
    model_defaults,
    restore_state,
    save_state,
    state_dir,
)
from rag.prompt_tokens import (
    build_request,
    formatter,
    plain_text_prompt,
    prompt_and_end,
)
from rag.registry import ModelSpec


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

    def generate(self, task: str, values: dict[str, object], max_tokens: int,
                 grammar: str | None = None, stop: list[str] | None = None) -> Generation:
        """Render prompts/{task}.* for this model's prompt style and generate, greedily."""
        params = dict(max_tokens=max_tokens, temperature=self.settings.temperature,
                      top_k=1, top_p=1.0, repeat_penalty=1.0, seed=self.settings.seed,
                      stop=stop or [])
        t0 = time.perf_counter()
        request = self._request(task, values)
        from llama_cpp import LlamaGrammar

        llama = self._llama
        compiled = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
        if self.can_score:
            prompt, _, fixed = self._prompt_and_end(task, values)
            self._prime(prompt, fixed)
        plain = plain_text_prompt(self._llama, self._render_chat, request)
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
        return Generation(text=text.strip(), prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0),
                          seconds=time.perf_counter() - t0)

    def _request(self, task: str, values: dict[str, object]) -> dict:
        return build_request(self.settings.prompts_dir, self.chat, task, values)

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
        end of the answer. The model reads; it writes nothing (bench/reader_llm.py measures it
        as a chooser among the reader's spans).

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
        """The prompt's tokens, the tokens that end an answer, and how many of the prompt's
        first tokens are the same for every question (rag.prompt_tokens.prompt_and_end)."""
        return prompt_and_end(self._llama, self._render_chat, self._request(task, values))

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
        if not kept and fixed and restore_state(llama, self._state_path(prompt[:fixed])):
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
                save_state(llama, self._state_path(prompt[:fixed]))
        llama.n_tokens = start

    def _state_path(self, fixed: list[int]) -> Path:
        """The file for this model, build, load and prompt: any change is another file."""
        import hashlib

        import llama_cpp

        key = json.dumps([self.fingerprint, llama_cpp.__version__, self.n_ctx, self.flash_attn,
                          load_fields(), self._llama.n_batch, fixed])
        return state_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.bin"

    @cached_property
    def _formatter(self):
        return formatter(self._llama)

    def _render_chat(self, messages: list[dict]):
        """Chat messages through the GGUF's chat template; the template is read only here,
        so a completion model never needs one."""
        return self._formatter(messages=messages)

    def _decode(self, tokens: list[int], n_past: int, last_only: bool = False):
        return decode(self._llama, tokens, n_past, last_only)


_cache: dict[tuple[str, int, int], LLM] = {}


def get_llm(spec: ModelSpec, settings: Settings) -> LLM:
    """One loaded model per file per process."""
    key = (str(spec.path), settings.n_ctx, settings.threads)
    if key not in _cache:
        _cache[key] = LLM(spec, settings)
    return _cache[key]


