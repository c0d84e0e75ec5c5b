import re

import pytest

from rag.config import Settings
from rag.errors import ModelNotFound
from rag.llm import get_llm
from rag.registry import resolve_llm

SENTENCES = [
    "South Korean intelligence estimates that about 15,000 North Korean personnel have been "
    "deployed to Russia, with roughly 600 killed in combat.",
    "Lee met Japanese Prime Minister Shigeru Ishiba in Tokyo.",
]


# At most 16 words of at most 24 characters on one line, a comma only between digit groups
GRAMMAR = r"""
root ::= word (" " word){0,15}
word ::= [^ \t\n\r\[\],] [^ \t\n\r\[\],]{0,23} ("," [0-9] [0-9] [0-9])* ","?
"""


def _word_ends(text):
    return [m.end() for m in re.finditer(r"\w(?:[\w,]*\w)?", text)]


def _values(question):
    return {"passages": "\n".join(f"[{i + 1}] {s}" for i, s in enumerate(SENTENCES)),
            "question": question}


@pytest.fixture(scope="module")
def smollm():
    settings = Settings(n_threads=2)
    return get_llm(resolve_llm("smollm2", settings), settings)


def test_smollm_uses_its_own_chat_template(smollm):
    assert smollm.chat
    assert "im_start" in smollm._llama.metadata["tokenizer.chat_template"]


def _short(text):
    # the grammar's own word limit: root ::= word (" " word){0,N} allows N + 1 words
    limit = int(re.search(r"\{0,(\d+)\}", GRAMMAR).group(1)) + 1
    return 0 < len(text.split()) <= limit and "\n" not in text and "[" not in text


def test_grammar_keeps_the_answer_short(smollm):
    gen = smollm.generate("answer", _values("Who did Lee meet in Tokyo?"), max_tokens=32,
                          grammar=GRAMMAR)
    assert _short(gen.text), gen.text
    assert gen.completion_tokens >= 1


def test_generation_is_deterministic(smollm):
    g = GRAMMAR
    a = smollm.generate("answer", _values("How many were killed?"), 24, grammar=g)
    b = smollm.generate("answer", _values("How many were killed?"), 24, grammar=g)
    assert a.text == b.text


def test_same_model_loads_once():
    settings = Settings(n_threads=2)
    spec = resolve_llm("smollm2", settings)
    assert get_llm(spec, settings) is get_llm(spec, settings)


def test_base_model_gets_a_completion_prompt():
    settings = Settings(n_threads=2)
    gemma = get_llm(resolve_llm("gemma3-270m", settings), settings)
    assert not gemma.chat
    gen = gemma.generate("answer", _values("Who did Lee meet in Tokyo?"), max_tokens=24,
                         grammar=GRAMMAR)
    assert _short(gen.text), gen.text


def test_truncated_gguf_is_refused_clearly(tmp_path):
    src = resolve_llm("smollm2", Settings()).path
    broken = tmp_path / "broken.gguf"
    with open(src, "rb") as f:
        broken.write_bytes(f.read(1 << 20))
    settings = Settings(n_threads=1)
    with pytest.raises(ModelNotFound, match="could not be loaded"):
        get_llm(resolve_llm(str(broken), settings), settings).generate(
            "answer", _values("x?"), 4)


def test_an_answer_does_not_depend_on_the_questions_before_it(smollm):
    # llama.cpp's sums depend on how a prompt is cut into batches; the prompt is evaluated
    # the same way whatever the context held, so history cannot tip a greedy choice
    g = GRAMMAR
    smollm._llama.reset()
    fresh = smollm.generate("answer", _values("Who did Lee meet in Tokyo?"), 24, grammar=g)
    smollm.generate("answer", _values("How many were killed?"), 24, grammar=g)
    smollm.score_continuations("answer", _values("How many were deployed?"), ["15,000"], [[6]])
    after = smollm.generate("answer", _values("Who did Lee meet in Tokyo?"), 24, grammar=g)
    assert after.text == fresh.text
    # the fixed system message stays evaluated between questions
    prompt, _, fixed = smollm._prompt_and_end("answer", _values("How many were killed?"))
    assert 0 < fixed < len(prompt)
    assert list(smollm._llama.input_ids[:fixed]) == prompt[:fixed]


def test_score_continuations_prefers_the_run_that_answers(smollm):
    values = {"passages": SENTENCES[0], "question": "How many personnel were killed in combat?"}
    texts = ["600 killed in combat", "Russia", "South Korean intelligence"]
    scored = smollm.score_continuations("answer", values, texts,
                                        [_word_ends(t) for t in texts])
    # one (end offset, log-probability) per word end, offsets within each text
    assert [e for e, _ in scored[0]] == [3, 10, 13, 20]
    assert [e for e, _ in scored[1]] == [6]
    best = {t[:e]: lp for t, ends in zip(texts, scored) for e, lp in ends}
    assert all(lp < 0 for lp in best.values())
    assert max(best, key=best.get).startswith("600")
    assert best["600"] > max(best["Russia"], best["South Korean intelligence"])


def test_model_defaults_hold_only_while_a_model_loads():
    """Llama() has no argument for use_extra_bufts (off where AMX kernels would crash
    llama.cpp): the defaults it starts from carry it inside model_defaults, and only there."""
    import llama_cpp.llama as high_level

    from rag.llama_runtime import model_defaults

    before = high_level.llama_cpp.llama_model_default_params().use_extra_bufts
    with model_defaults(use_extra_bufts=not before):
        assert high_level.llama_cpp.llama_model_default_params().use_extra_bufts is (not before)
    assert high_level.llama_cpp.llama_model_default_params().use_extra_bufts is before
    with pytest.raises(RuntimeError), model_defaults(use_extra_bufts=False):
        raise RuntimeError("a load that fails")
    assert high_level.llama_cpp.llama_model_default_params().use_extra_bufts is before


def test_the_loaded_model_has_extra_buffers_off_where_amx_crashes(smollm):
    from rag.llama_runtime import amx_crashes

    assert smollm._llama.model_params.use_extra_bufts is (not amx_crashes())


def test_flash_attention_follows_the_measurement_unless_told(monkeypatch):
    from rag.config import cpu_flags
    from rag.llama_runtime import flash_attention_pays

    monkeypatch.delenv("RAG_FLASH_ATTN", raising=False)
    assert flash_attention_pays() is ("amx_int8" not in cpu_flags())
    for forced, expected in (("0", False), ("1", True)):
        monkeypatch.setenv("RAG_FLASH_ATTN", forced)
        assert flash_attention_pays() is expected


def test_gemma_loads_without_an_error_line_that_is_none(capfd):
    """llama.cpp reports Gemma 3's full-size sliding-window cache at error level; rag drops
    that one line and passes every other message on."""
    from rag import llama_runtime

    settings = Settings.from_env(n_ctx=1024)  # a size no other test loads: a fresh load here
    gemma = get_llm(resolve_llm("gemma3-270m", settings), settings)
    _ = gemma._llama
    err = capfd.readouterr().err
    assert "full-size SWA cache" not in err
    llama_runtime._log_filter(3, b"ggml: a real failure\n", None)
    assert "ggml: a real failure" in capfd.readouterr().err


def test_the_system_message_state_is_restored_from_disk_to_the_same_answer(tmp_path,
                                                                           monkeypatch):
    """A new process restores the evaluated system message from disk instead of evaluating it
    again, and answers exactly as it would have; a damaged file is evaluated afresh."""
    from rag.llama_runtime import state_dir
    from rag.llm import LLM

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = Settings(n_threads=1)  # three loads of its own: one thread whatever else runs
    spec = resolve_llm("smollm2", settings)
    values, g = _values("How many were killed?"), GRAMMAR

    def run() -> tuple[str, list, list[int]]:
        llm = LLM(spec, settings)  # a model of its own: a new process's
        decoded: list[int] = []
        decode = llm._decode

        def spy(tokens, n_past, last_only=False):
            decoded.append(n_past)
            return decode(tokens, n_past, last_only)

        llm._decode = spy
        text = llm.generate("answer", values, 24, grammar=g).text
        scores = llm.score_continuations("answer", values, ["about 600", "15,000"], [[9], [6]])
        return text, scores, decoded

    first, first_scores, decoded = run()
    assert decoded[0] == 0  # the system message evaluated: no state yet
    files = list(state_dir().glob("*.bin"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000_000
    again, again_scores, decoded = run()
    assert decoded[0] > 0  # restored: evaluation starts after the system message
    assert again == first and again_scores == first_scores
    blob = files[0].read_bytes()
    files[0].write_bytes(blob[:-100] + bytes(100))  # damaged
    damaged, damaged_scores, decoded = run()
    assert decoded[0] == 0 and damaged == first and damaged_scores == first_scores
