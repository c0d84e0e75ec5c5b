import pytest

from rag import prompts
from rag.config import Settings
from rag.errors import PromptError


def test_missing_variable_is_an_error():
    with pytest.raises(PromptError, match="question"):
        prompts.render("Q: {question} P: {passages}", {"passages": "x"})


def test_doubled_braces_are_literal():
    assert prompts.render('{{"a": {v}}}', {"v": 1}) == '{"a": 1}'


@pytest.mark.parametrize("task", ["answer", "naive"])
def test_every_task_has_chat_and_completion_files(task):
    pdir = Settings().prompts_dir
    for part in ("system", "user", "completion"):
        text = prompts.load(pdir, f"{task}.{part}.txt")
        assert text.strip()
    assert {"passages", "question"} <= prompts.placeholders(
        prompts.load(pdir, f"{task}.user.txt"))


def test_missing_prompt_file_names_the_fix(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        prompts.load(tmp_path, "nope.txt")
