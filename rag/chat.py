"""The chat job: a conversation in the terminal over the index, with follow-ups.

One Session holds the index, the models and the conversation for as long as it runs. Each
question is made standalone for retrieval from the turn before it (rag/rewrite.py), answered by
the ask pipeline, and shown with its [n] markers and sources, exactly as `rag ask` prints it;
when the input is piped, the rewritten query goes to standard error so that standard output
holds only answers.

Unlike the other jobs this module writes to the streams it is given: it is the terminal side
of the conversation. The CLI only builds a Session and runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rag import render
from rag.answer import Answerer, Instruction, instruction
from rag.config import Settings, cache_dir
from rag.display import printable
from rag.errors import RagError
from rag.rewrite import ANAPHORA, MODES, Rewrite, rewrite_llm, rewrite_rules
from rag.types import Answer, Hit

DEFAULT_REWRITE = "rules"  # chosen by bench/followups.py, see bench/results_followups.md

HELP = """\
Ask a question about the indexed documents; follow-ups may refer to the previous answer.
  /sources        the passages behind the last answer, in full
  /brief [TOPIC]  a cited briefing over the index, or over TOPIC
  /reset          forget the conversation (the next question stands alone)
  /model NAME     rewrite follow-ups with another model (`rag models`; with --rewrite llm)
  /help           this list
  /quit           leave (so does Ctrl-D); Ctrl-C stops an answer being made"""

DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


# `rag chat` quotes the sentence that holds the answer unless told otherwise (--style,
# RAG_ANSWER_STYLE), where `rag ask` and `rag eval` print the reader's span: a follow-up is
# searched with the words of the turn before, the answer's among them, and a quoted sentence
# carries more of them. The 24 follow-ups of bench/followups.py (seeds / with 500 SQuAD
# paragraphs) were right on 0.833 / 0.833 quoted and on 0.750 / 0.750 in the short style.
DEFAULT_STYLE = "quote"


# What a request's topic is when it means the conversation so far ("summarize that")
_BACK = ANAPHORA | {"that", "all", "of", "everything", "so", "far"}


class ChatAnswerer(Answerer):
    """The ask pipeline, searching with the standalone query while the answer is phrased and
    checked against the user's own question."""

    search_query: str | None = None

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        return super().retrieve(self.search_query or question, k)

    def ask_turn(self, rewrite: Rewrite, k: int | None = None) -> Answer:
        """Search with the standalone query, answer the user's question; when no passage is
        close enough to the bare question ("Who has been calling for them?"), answer the
        standalone query itself."""
        wanted = instruction(rewrite.question)
        if wanted is not None and rewrite.rewritten and (
                wanted.topic is None or set(wanted.topic.lower().split()) <= _BACK):
            # "summarize that": the briefing is on what the conversation was about
            carried = rewrite.query.partition("? (")[2].rstrip(")").strip() or None
            return self.briefing(rewrite.question, Instruction(carried, wanted.conflicts_first))
        self.search_query = rewrite.query if rewrite.rewritten else None
        try:
            answer = self.ask(rewrite.question, k)
        finally:
            self.search_query = None
        if answer.abstained and rewrite.rewritten:
            answer = self.ask(rewrite.query, k)
        return answer


@dataclass
class Turn:
    rewrite: Rewrite
    answer: Answer


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def reset(self) -> None:
        self.turns.clear()


def history_path() -> Path:
    return cache_dir() / "chat_history"


class Session:
    def __init__(self, settings: Settings, model: str | None = None, k: int = 5,
                 rewrite: str = DEFAULT_REWRITE, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr, tty: bool = False):
        if rewrite not in MODES:
            raise RagError(f"rewrite must be one of {', '.join(MODES)}, not {rewrite!r}")
        self.settings = settings
        self.k = k
        self.mode = rewrite
        self.out, self.err, self.tty = out, err, tty
        self.answerer = ChatAnswerer(settings, model)
        self.conversation = Conversation()

    def close(self) -> None:
        self.answerer.close()

    # -- writing ------------------------------------------------------------------------------

    def _say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _note(self, text: str) -> None:
        """A line about the conversation, not an answer: dim on a terminal, else on stderr."""
        text = printable(text)
        if self.tty:
            self._say(f"{DIM}{text}{RESET}")
        else:
            self.err.write(text + "\n")
            self.err.flush()

    # -- questions ----------------------------------------------------------------------------

    def rewrite(self, question: str) -> Rewrite:
        last = self.conversation.last
        prev_query = last.rewrite.query if last else None
        prev_answer = last.answer.answer if last and not last.answer.abstained else ""
        if self.mode == "llm":
            return rewrite_llm(self.answerer.llm, question, prev_query, prev_answer)
        if self.mode == "rules":
            return rewrite_rules(question, prev_query, prev_answer)
        return rewrite_rules(question, None)

    def ask(self, question: str) -> Answer | None:
        """Answer one question and show it; None when stopped by Ctrl-C."""
        try:
            rw = self.rewrite(question)
            if rw.rewritten:
                self._note(f"  searching: {rw.query}")
            answer = self.answerer.ask_turn(rw, self.k)
        except KeyboardInterrupt:
            self._say("(stopped)")
            return None
        self._say(render.answer_text(answer))
        self._say()
        self.conversation.turns.append(Turn(rw, answer))
        return answer

    # -- commands -----------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """One line typed by the user; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            try:
                self.ask(line)
            except RagError as e:
                self._error(str(e))
            return True
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        command = {"help": self._help, "sources": self._sources, "reset": self._reset,
                   "brief": self._brief, "model": self._model}.get(name)
        if command is None:
            self._error(f"unknown command /{name}: /help lists the commands")
            return True
        try:
            command(arg)
        except KeyboardInterrupt:
            self._say("(stopped)")
        except RagError as e:
            self._error(str(e))
        return True

    def _error(self, text: str) -> None:
        self.err.write(f"rag: {printable(text, one_line=True)}\n")
        self.err.flush()

    def _help(self, _: str) -> None:
        self._say(HELP)

    def _sources(self, _: str) -> None:
        last = self.conversation.last
        if last is None:
            self._say("No answer yet: ask a question first.")
            return
        self._say(f"Passages behind: {printable(last.answer.question, one_line=True)}")
        if last.rewrite.rewritten:
            self._say(f"searched as: {printable(last.rewrite.query, one_line=True)}")
        self._say()
        self._say(render.passages_text(last.answer))
        self._say()

    def _reset(self, _: str) -> None:
        self.conversation.reset()
        self._say("Conversation cleared: the next question stands alone.")

    def _brief(self, topic: str) -> None:
        from rag import brief

        result = brief.build(self.settings, topic or None, max_points=6, max_words=200)
        self._say(render.briefing_markdown(result).rstrip())
        self._say()

    def _model(self, name: str) -> None:
        if not name:
            self._say(f"model: {self.model_name()}")
            return
        from rag.llm import get_llm
        from rag.registry import resolve_llm

        get_llm(resolve_llm(name, self.settings), self.settings)  # unknown -> ModelNotFound
        new = ChatAnswerer(self.settings, name)
        self.answerer.close()
        self.answerer = new
        self._say(f"model: {self.model_name()}")

    def model_name(self) -> str:
        """The GGUF model's name, found in the registry without loading it."""
        from rag.registry import resolve_llm

        return resolve_llm(self.answerer.model_name, self.settings).name

    # -- the loop -----------------------------------------------------------------------------

    def run(self, read_line: Callable[[], str]) -> None:
        """Until /quit or end of input (read_line raises EOFError)."""
        while True:
            try:
                line = read_line()
            except KeyboardInterrupt:  # at the prompt: a fresh prompt, as in a shell
                continue
            except EOFError:
                return
            try:
                if not self.handle(line):
                    return
            except KeyboardInterrupt:
                self._say("(stopped)")


def terminal_reader(settings: Settings) -> Callable[[], str]:
    """A prompt with line editing and a history kept across sessions (prompt_toolkit)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        history = FileHistory(str(path))
    except OSError:
        history = InMemoryHistory()
    session: PromptSession = PromptSession(history=history)
    return lambda: session.prompt("> ")


def piped_reader(stream: TextIO) -> Callable[[], str]:
    def read() -> str:
        line = stream.readline()
        if not line:
            raise EOFError
        return line

    return read


def welcome(session: Session) -> str:
    n = len(session.answerer.store.documents())
    model = f", follow-ups rewritten by {printable(session.model_name(), one_line=True)}" \
        if session.mode == "llm" else ""
    return (f"{BOLD}rag chat{RESET} over {n} document{'s' if n != 1 else ''}{model}: /help "
            "lists the commands, Ctrl-D leaves.")
