"""rag chat: follow-ups made standalone, commands, piped use, and a person at a terminal."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.chat import Session, piped_reader
from rag.rewrite import content_keys, is_follow_up, rewrite_rules

BIN = Path(sys.executable).parent
Q1 = "How many North Korean personnel have been deployed to Russia?"
Q2 = "And how many of them have been killed in combat?"


def _env(**extra) -> dict:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAG_THREADS": "1", **extra}


def _answers(stdout: str) -> list[str]:
    """The answer lines of piped output: each answer block starts after a blank line."""
    blocks = [b for b in stdout.split("\n\n") if b.strip()]
    return [b.splitlines()[0] for b in blocks if not b.startswith("Sources:")]


# -- piped, as scripts use it ----------------------------------------------------------------

def test_piped_follow_up_is_answered_and_cited(seed_settings):
    r = subprocess.run([BIN / "rag", "chat", "--index", seed_settings.index_dir],
                       input=f"{Q1}\n{Q2}\n", capture_output=True, text=True, timeout=300,
                       env=_env())
    assert r.returncode == 0, r.stderr
    first, second = _answers(r.stdout)
    assert "15,000" in first and first.endswith("[1]")
    assert "600" in second and second.endswith("[1]")
    assert r.stdout.count("Sources:") == 2
    assert r.stdout.count("  [1] ") == 2 and "seeds" in r.stdout
    # the rewritten query goes to stderr, never among the answers
    assert "searching:" in r.stderr and "North Korean personnel" in r.stderr
    assert "searching:" not in r.stdout
    # chat answers in its own default style (rag.chat.DEFAULT_STYLE), as `rag ask` does in it
    quoted = subprocess.run([BIN / "rag", "ask", Q1, "--style", "quote", "--index",
                             seed_settings.index_dir],
                            capture_output=True, text=True, timeout=300, env=_env())
    assert r.stdout.startswith(quoted.stdout)


def test_piped_empty_input_exits_0(seed_settings):
    r = subprocess.run([BIN / "rag", "chat", "--index", seed_settings.index_dir], input="",
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0 and r.stdout == ""


# -- the rewriter ----------------------------------------------------------------------------

def test_follow_up_carries_the_subject_and_keeps_the_new_words():
    rw = rewrite_rules(Q2, Q1, "about 15,000 [1]")
    assert rw.rewritten and rw.question == "How many of them have been killed in combat?"
    assert "North Korean personnel" in rw.query and "Russia" in rw.query
    assert content_keys(Q2) <= content_keys(rw.query)


@pytest.mark.parametrize("question,previous,answer,carried", [
    ("Which U.S. president is he due to meet next?", "Who did Lee Jae Myung meet in Tokyo?",
     "Shigeru Ishiba [1]", "Lee Jae Myung"),
    ("How many portraits of the dead were displayed there?",
     "In which city was the ceremony honoring the returning soldiers held?", "Pyongyang [1]",
     "Pyongyang"),
    ("In which war?", "Which Russian president's forces has North Korea sent troops to aid?",
     "Vladimir Putin [1]", "Vladimir Putin"),
    ("What about the January launch?", "What kind of warhead was on the missile?", "", "warhead"),
])
@pytest.mark.parametrize("carry", ["words", "entities"])
def test_entities_are_carried_over(question, previous, answer, carried, carry):
    rw = rewrite_rules(question, previous, answer, carry=carry)
    assert carried in rw.query
    assert content_keys(question) <= content_keys(rw.query)


def test_a_long_chat_does_not_grow_the_query():
    query, answer = Q1, "about 15,000 [1]"
    for q in ["How many of them were killed?", "Where were they sent?", "Who sent them there?",
              "When did they leave?", "What did they bring with them?"]:
        rw = rewrite_rules(q, query, answer)
        assert rw.rewritten and content_keys(q) <= content_keys(rw.query)
        query, answer = rw.query, "Kim Jong Un ordered the deployment last autumn [1]"
    carried = rw.query.split("? (", 1)[1]
    assert len(carried.split()) <= 16
    assert "Kim" in carried  # the newest turn's words are the ones kept


@pytest.mark.parametrize("question", [
    "Who is the president of South Korea?",
    "In what year did the armistice end active fighting in the Korean War?",
    "Is there a peace treaty between North and South Korea?",
])
def test_standalone_questions_are_left_alone(question):
    assert not is_follow_up(question)
    rw = rewrite_rules(question, Q1, "about 15,000 [1]")
    assert not rw.rewritten and rw.query == question == rw.question


def test_leading_and_is_dropped_from_a_standalone_question():
    rw = rewrite_rules("And who did Lee Jae Myung meet in Tokyo?", Q1, "about 15,000 [1]")
    assert rw.question == rw.query == "Who did Lee Jae Myung meet in Tokyo?"


def test_first_question_is_never_rewritten():
    assert not rewrite_rules(Q2, None).rewritten


def test_model_rewrite_never_loses_the_users_words(answerer):
    from rag.rewrite import rewrite_llm

    for q, prev, ans in [(Q2, Q1, "about 15,000 [1]"),
                         ("Who has been calling for them?",
                          "What kind of talks has Pyongyang refused to revive?",
                          "nuclear talks [1]")]:
        rw = rewrite_llm(answerer.llm, q, prev, ans)
        assert rw.rewritten and rw.method in ("llm", "llm+words")
        assert content_keys(rw.question) <= content_keys(rw.query), rw.query
        assert "\n" not in rw.query


# -- commands --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session(seed_settings):
    s = Session(seed_settings, out=io.StringIO(), err=io.StringIO())
    yield s
    s.close()


def _drive(session: Session, *lines: str) -> tuple[str, str]:
    session.out, session.err = io.StringIO(), io.StringIO()
    session.run(piped_reader(io.StringIO("".join(f"{x}\n" for x in lines))))
    return session.out.getvalue(), session.err.getvalue()


def test_sources_shows_the_passages_in_full(session, seed_settings):
    session.conversation.reset()
    out, _ = _drive(session, Q1, "/sources")
    turn = session.conversation.last
    cited = turn.answer.citations[0]
    passage = next(h.chunk.text for h in turn.answer.hits if h.chunk.chunk_id == cited.chunk_id)
    assert len(passage) > len(cited.text) and cited.text in passage
    tail = out.split("Passages behind:", 1)[1]
    assert passage in tail
    assert tail.count("retrieved ") == len(turn.answer.hits) - 1


def test_sources_before_any_answer(session):
    session.conversation.reset()
    out, err = _drive(session, "/sources")
    assert "ask a question first" in out and not err


def test_reset_forgets_the_conversation(session):
    session.conversation.reset()
    out, err = _drive(session, Q1, Q2)
    assert "searching:" in err and session.conversation.last.rewrite.rewritten
    out, err = _drive(session, "/reset", Q2)
    assert "Conversation cleared" in out
    assert "searching:" not in err
    assert len(session.conversation.turns) == 1
    assert not session.conversation.last.rewrite.rewritten


def test_help_lists_every_command(session):
    out, _ = _drive(session, "/help")
    for command in ("/sources", "/brief", "/reset", "/model", "/help", "/quit"):
        assert command in out


def test_unknown_command_and_bad_model_are_one_line_and_the_loop_goes_on(session):
    session.conversation.reset()
    out, err = _drive(session, "/frobnicate", "/model no-such-model", Q1)
    lines = err.strip().splitlines()
    assert lines[0] == "rag: unknown command /frobnicate: /help lists the commands"
    assert lines[1].startswith("rag: unknown model 'no-such-model'") and len(lines) == 2
    assert "15,000" in out
    assert session.model_name() == "smollm2"


def test_model_switches_and_back(session):
    out, err = _drive(session, "/model gemma3-270m", Q1, "/model", "/model smollm2")
    assert not err, err
    assert "model: gemma3-270m" in out and out.rstrip().endswith("model: smollm2")
    assert out.count("model: gemma3-270m") == 2 and "15,000" in out
    assert session.answerer.model_name == "smollm2"


def test_brief_with_a_topic(session):
    out, err = _drive(session, "/brief North Korean troops in Russia")
    assert not err
    assert re.search(r"\[\d+\]", out) and "15,000" in out


def test_quit_ends_the_loop(session):
    out, _ = _drive(session, "/quit", Q1)
    assert out == ""


class _InterruptingTerminal(io.StringIO):
    """A terminal where the user presses Ctrl-C while a follow-up is being searched."""

    def __init__(self):
        super().__init__()
        self.armed = True

    def write(self, s: str) -> int:
        if self.armed and "searching:" in s:
            self.armed = False
            raise KeyboardInterrupt
        return super().write(s)


def test_ctrl_c_stops_the_answer_and_the_next_question_is_answered(seed_settings):
    term = _InterruptingTerminal()
    s = Session(seed_settings, out=term, err=io.StringIO(), tty=True)
    try:
        s.run(piped_reader(io.StringIO(f"{Q1}\n{Q2}\n{Q1}\n")))
    finally:
        s.close()
    out = term.getvalue()
    first, after = out.split("(stopped)", 1)
    assert re.search(r"15,000[^\n]*\[1\]", first)
    assert re.search(r"15,000[^\n]*\[1\]", after) and "Sources:" in after
    assert len(s.conversation.turns) == 2  # the stopped question left no turn


# -- a person at a terminal (tmux) -----------------------------------------------------------

TMUX = shutil.which("tmux")


class _Tmux:
    def __init__(self, tmp_path: Path, command: str):
        self.sock = str(tmp_path / "tmux.sock")
        self.log = tmp_path / "pane.log"
        subprocess.run(["tmux", "-S", self.sock, "new-session", "-d", "-x", "120", "-y", "40",
                        "-s", "chat", command], check=True, env=_env())
        subprocess.run(["tmux", "-S", self.sock, "pipe-pane", "-o", "-t", "chat",
                        f"cat >> {self.log}"], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-S", self.sock, "send-keys", "-t", "chat", *keys], check=True)

    def screen(self) -> str:
        r = subprocess.run(["tmux", "-S", self.sock, "capture-pane", "-p", "-J", "-S", "-2000",
                            "-t", "chat"], capture_output=True, text=True)
        return r.stdout

    def raw(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, predicate, timeout: float = 120, every: float = 0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(every)
        raise AssertionError(f"timed out; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)


def _chat_in_tmux(seed_settings, tmp_path) -> _Tmux:
    """`rag chat` in a terminal, at its first prompt; the pane says how it exited."""
    t = _Tmux(tmp_path, f"XDG_CACHE_HOME={tmp_path / 'cache'} {BIN / 'rag'} chat --index "
                        f"{seed_settings.index_dir}; echo \"[rag exited $?]\"; sleep 120")
    try:
        t.wait(lambda s: "/help lists the commands" in s and s.rstrip().endswith(">"))
    except BaseException:
        t.close()
        raise
    return t


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_a_person_in_a_terminal(seed_settings, tmp_path):
    t = _chat_in_tmux(seed_settings, tmp_path)
    try:
        t.keys(Q1, "Enter")
        screen = t.wait(lambda s: s.count("Sources:") == 1 and s.rstrip().endswith(">"))
        assert re.search(r"15,000[^\n]*\[1\]", screen)

        t.keys("/sources", "Enter")
        screen = t.wait(lambda s: "Passages behind:" in s and s.rstrip().endswith(">"))
        assert "Since the start of Russia’s war in Ukraine, North Korea has supplied Moscow" \
            in screen  # the cited passage in full, not just its sentence

        # a follow-up, answered from the conversation; Ctrl-C at the prompt gives a new one
        t.keys(Q2, "Enter")
        screen = t.wait(lambda s: s.count("Sources:") == 2 and s.rstrip().endswith(">"))
        assert "searching:" in screen
        t.keys("half a question", "C-c")
        t.keys("Which family dynasty has ruled North Korea for decades?", "Enter")
        screen = t.wait(lambda s: s.count("Sources:") == 3 and s.rstrip().endswith(">"))
        assert re.search(r"Kim dynasty[^\n]*\[1\]", screen)
        assert "do not answer" not in screen  # the half question was never asked

        t.keys("/quit", "Enter")
        screen = t.wait(lambda s: "[rag exited" in s)
        assert "[rag exited 0]" in screen
    finally:
        t.close()


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_ctrl_d_at_the_prompt_leaves(seed_settings, tmp_path):
    t = _chat_in_tmux(seed_settings, tmp_path)
    try:
        t.keys("C-d")
        assert "[rag exited 0]" in t.wait(lambda s: "[rag exited" in s)
    finally:
        t.close()


def test_readme_names_every_chat_command():
    from rag.chat import HELP

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Chatting", 1)[1].split("\n## ", 1)[0]
    for command in re.findall(r"^\s+(/\w+)", HELP, re.M):
        assert f"`{command}" in section, command
