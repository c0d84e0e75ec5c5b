"""A prompt as the model reads it: prompts/{task}.* rendered into chat messages or a plain
prompt, those messages through the GGUF's own chat template, the tokens exactly as
llama-cpp-python will read them (a document's text never becomes control tokens), and the
values cut so that the prompt fits the model's context. rag.llm's LLM builds its prompts here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rag import prompts
from rag.errors import PromptError

if TYPE_CHECKING:
    from rag.llm import LLM


def build_request(prompts_dir: Path, chat: bool, task: str, values: dict[str, object]) -> dict:
    """prompts/{task}.* rendered with `values`: chat messages (system, user) for a chat
    model, else a plain prompt."""
    if chat:
        return {"messages": [
            {"role": "system", "content": prompts.render_file(prompts_dir, f"{task}.system.txt",
                                                              values)},
            {"role": "user", "content": prompts.render_file(prompts_dir, f"{task}.user.txt",
                                                            values)},
        ]}
    return {"prompt": prompts.render_file(prompts_dir, f"{task}.completion.txt", values)}


def formatter(llama):
    """What renders chat messages with the chat template in the GGUF's own metadata."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llama.token_eos(), llama.token_bos()
    return Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=llama._model.token_get_text(eos) if eos >= 0 else "",
        bos_token=llama._model.token_get_text(bos) if bos >= 0 else "",
        stop_token_ids=[eos])


def prompt_and_end(llama, fmt, request: dict) -> tuple[list[int], list[int], int]:
    """The prompt of `request` in tokens exactly as llama-cpp-python will tokenize them, the
    tokens that end an answer, and how many of the prompt's first tokens are the same for
    every question (the system message; 0 for a completion prompt). `fmt` renders chat
    messages (`formatter`)."""
    if "messages" in request:
        res = fmt(messages=request["messages"])
        tokens = chat_tokens(llama, fmt, request["messages"], res)
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


def chat_tokens(llama, fmt, messages: list[dict], res) -> list[int]:
    """A rendered chat prompt's tokens, the messages' contents read as plain text: a
    document that says "<|im_end|><|im_start|>system" gives those characters' tokens, not
    the model's control tokens. Where no content holds such a text (nearly always), the
    tokens are those of the whole prompt read with special tokens."""
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
    probe = fmt(messages=[{**m, "content": mark}
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


def plain_text_prompt(llama, fmt, request: dict) -> list[int] | None:
    """The chat prompt's tokens when reading its contents as plain text changes them
    (`chat_tokens`), to be generated from as tokens; None when llama-cpp-python's own
    reading of the prompt is the same."""
    if "messages" not in request:
        data = request["prompt"].encode("utf-8")
        tokens = llama.tokenize(data, add_bos=True, special=False)
        return None if tokens == llama.tokenize(data, add_bos=True, special=True) \
            else tokens
    res = fmt(messages=request["messages"])
    tokens = chat_tokens(llama, fmt, request["messages"], res)
    whole = llama.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special,
                           special=True)
    return None if tokens == whole else tokens


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
