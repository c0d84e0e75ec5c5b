"""The GGUF model behind one method, loaded once per process and lazily.

Prompt style comes from the registry: "chat" uses the chat template stored in the GGUF's own
metadata (never hand-built tokens); "completion" renders a plain prompt file; "auto" (drop-in
models) picks chat when the GGUF carries a template.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from rag import prompts
from rag.config import Settings
from rag.errors import ModelNotFound, PromptError
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
    def _llama(self):
        from llama_cpp import Llama

        try:
            return Llama(
                model_path=str(self.spec.path),
                n_ctx=self.n_ctx,
                n_threads=self.settings.threads,
                n_threads_batch=self.settings.threads,
                n_batch=512,
                seed=self.settings.seed,
                flash_attn=True,
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
        pdir = self.settings.prompts_dir
        params = dict(max_tokens=max_tokens, temperature=self.settings.temperature,
                      top_k=1, top_p=1.0, repeat_penalty=1.0, seed=self.settings.seed,
                      stop=stop or [])
        t0 = time.perf_counter()
        if self.chat:
            request: dict = {"messages": [
                {"role": "system", "content": prompts.render_file(pdir, f"{task}.system.txt",
                                                                  values)},
                {"role": "user", "content": prompts.render_file(pdir, f"{task}.user.txt",
                                                                values)},
            ]}
        else:
            request = {"prompt": prompts.render_file(pdir, f"{task}.completion.txt", values)}
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
        if on_token is not None:
            gen = self._stream(request, params, compiled, on_token, t0)
        else:
            if "messages" in request:
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

    def _stream(self, request: dict, params: dict, compiled, on_token: Callable[[str], None],
                t0: float) -> Generation:
        # A streamed response carries no usage: each chunk is one token, and the context then
        # holds the prompt and the tokens evaluated after it.
        llama = self._llama
        if "messages" in request:
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
        context size, the rendered prompt, the grammar and every sampling parameter."""
        from importlib.metadata import PackageNotFoundError, version

        from rag.cache import cache_key

        try:
            runtime = version("llama_cpp_python")
        except PackageNotFoundError:
            runtime = "unknown"
        return cache_key(model=self.fingerprint, runtime=runtime, n_ctx=self.n_ctx,
                         request=request, params=params, grammar=grammar)


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
