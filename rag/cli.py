"""The `rag` command: parse, call the library, print, map errors to exit codes.

Heavy modules (torch, llama_cpp, faiss, sentence_transformers) are imported inside the
commands that need them, so `rag --help` starts at once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rag.config import Settings
from rag.display import MAX_QUESTION_CHARS, fit_question, json_text, no_surrogates, printable
from rag.errors import RagError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Offline question answering and cited briefings over your documents.")

IndexOpt = Annotated[Path | None, typer.Option("--index", envvar="RAG_INDEX",
                                               help="Index folder [default: .rag]")]
ModelOpt = Annotated[str | None, typer.Option("--model", envvar="RAG_MODEL",
                                              help="Model name from `rag models`, or a GGUF path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object")]
KOpt = Annotated[int, typer.Option("--k", min=1, max=100, help="Passages to retrieve")]


class Style(StrEnum):
    quote = "quote"
    short = "short"


StyleOpt = Annotated[Style | None, typer.Option(
    "--style", envvar="RAG_ANSWER_STYLE", case_sensitive=False,
    help="short: the reader's span (default of ask and eval); quote: the sentence that "
         "holds it (default of chat)")]


def _settings(index: Path | None, model: str | None = None,
              style: Style | None = None) -> Settings:
    return Settings.from_env(index_dir=index, model=model,
                             answer_style=style.value if style else None)


def _fail(err: Exception, index: Path | None = None) -> None:
    """A one-line reason on standard error and the exit code: a project error's own, or for
    an index that failed while in use (a damaged page, a full disk), 1."""
    if not isinstance(err, RagError):
        from rag.layout import describe_error

        where = index or Path(os.environ.get("RAG_INDEX") or ".rag")
        err = RagError(describe_error(where, err))
    typer.echo(f"rag: {printable(err, one_line=True)}", err=True)
    raise typer.Exit(err.exit_code)


# What a command turns into a one-line reason: the project's errors, and the index's storage
# failing underneath it (sqlite3.Error, OSError: a damaged page, a full disk)
FAILURES = (RagError, sqlite3.Error, OSError)


def _question(text: str) -> str:
    """A question as typed, made fit to search: not empty (a usage error), invalid UTF-8 as
    U+FFFD, and at most MAX_QUESTION_CHARS (cut at a word, with a note on standard error)."""
    text = no_surrogates(text)
    if not text.strip():
        raise UsageError("the question is empty: ask something, e.g. rag ask \"Who won?\"")
    if len(text) > MAX_QUESTION_CHARS:
        text = fit_question(text)
        typer.echo(f"rag: the question was cut to its first {len(text):,} characters "
                   f"(at most {MAX_QUESTION_CHARS:,} are read)", err=True)
    return text


def write_file(path: Path, text: str) -> None:
    """Write a report or briefing the user named: never through a symlink (it would
    overwrite the file it points at), whole or not at all (a temporary file renamed)."""
    import tempfile

    if path.is_symlink():
        raise RagError(f"{path} is a symlink: name a plain file to write (rag does not write "
                       "through links)")
    if path.exists() and not path.is_file():
        raise RagError(f"{path} is not a regular file: name a file to write")
    folder = path.parent
    if not folder.is_dir():
        raise RagError(f"cannot write {path}: the folder {folder}/ does not exist "
                       "(create it first)")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise RagError(f"cannot write {path} ({(e.strerror or str(e)).lower()})") from None


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json_text(obj) + "\n")


class StageBars:
    """Progress of a long command on standard error, drawn by rich: one bar per stage (read,
    embed, ...) with the count and the time left. Called as the library's progress callback,
    (stage, done, total); used as a context manager so the display is always closed."""

    def __init__(self, console=None, clock=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(TextColumn("{task.description:>6}"), BarColumn(),
                             MofNCompleteColumn(), TimeRemainingColumn(),
                             console=console or Console(stderr=True), get_time=clock,
                             redirect_stdout=False)  # standard output holds results only
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> StageBars:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        done = min(done, total)
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total, completed=done)
        self.bars.update(self.tasks[stage], completed=done, total=total)


def _progress_bars():
    """Bars on standard error for a person watching; nothing when standard error is not a
    terminal (a script, a log file)."""
    return StageBars() if sys.stderr.isatty() else contextlib.nullcontext()


@app.command()
def ingest(paths: Annotated[list[Path], typer.Argument(help="Files and folders to add")],
           index: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Add files and folders (recursively) to the index: .txt, .md, .html, .pdf, .docx and
    .jsonl (one document per record with a "text" field)."""
    from rag.ingest import ingest as run

    try:
        with _progress_bars() as bars:
            report = run([str(p) for p in paths], _settings(index), progress=bars,
                         notify=lambda text: typer.echo(
                             f"rag: {printable(text, one_line=True)}", err=True))
    except FAILURES as e:
        _fail(e, index)
    except KeyboardInterrupt:
        typer.echo("\nrag: interrupted; the index keeps what was committed: run the same "
                   "`rag ingest` again to finish", err=True)
        raise typer.Exit(130) from None
    for r in report.refused:
        typer.echo(f"rag: refused {printable(r.path, one_line=True)}: "
                   f"{printable(r.reason, one_line=True)}", err=True)
    if json_out:
        _emit_json(report.as_json())
    else:
        typer.echo(f"indexed {len(report.added)} new, {len(report.replaced)} changed, "
                   f"{len(report.unchanged)} unchanged, {len(report.removed)} removed "
                   f"({report.n_chunks} chunks written); {len(report.refused)} refused", err=True)
    if report.refused:
        anything = report.added or report.replaced or report.unchanged or report.removed
        raise typer.Exit(3 if anything else 1)


@app.command()
def search(query: str, index: IndexOpt = None, k: KOpt = 5, json_out: JsonOpt = False) -> None:
    """Retrieval only: the best passages, no model."""
    from rag.retrieve import Retriever
    from rag.store import open_store

    try:
        query = _question(query)
        settings = _settings(index)
        store, embedder = open_store(settings)
        hits = Retriever(store, embedder, late=settings.late_interaction,
                         tuning=settings.retrieval).search(query, k)
    except FAILURES as e:
        _fail(e, index)
    if json_out:
        _emit_json({"query": query, "hits": [
            {"rank": h.rank, "source": h.chunk.source, "chunk_id": h.chunk.chunk_id,
             "score": round(h.score, 6), "text": h.chunk.text,
             "start": h.chunk.start, "end": h.chunk.end, "also_in": list(h.also_in)}
            for h in hits]})
        return
    for h in hits:
        typer.echo(f"{h.rank}. {printable(h.chunk.source, one_line=True)} "
                   f"({h.chunk.chunk_id}, score {h.score:.4f})")
        typer.echo(f"   {printable(h.chunk.text)}\n")


def _print_answer(a) -> None:
    from rag.render import answer_text

    typer.echo(answer_text(a))


@app.command()
def ask(question: str, index: IndexOpt = None, model: ModelOpt = None, k: KOpt = 5,
        json_out: JsonOpt = False, style: StyleOpt = None) -> None:
    """One grounded answer with numbered citations."""
    from rag.answer import Answerer, answer_json

    try:
        question = _question(question)
        answerer = Answerer(_settings(index, model, style))
        answer = answerer.ask(question, k)
    except FAILURES as e:
        _fail(e, index)
    if json_out:
        _emit_json(answer_json(answer))
    else:
        _print_answer(answer)


@app.command()
def chat(index: IndexOpt = None, model: ModelOpt = None, k: KOpt = 5,
         rewrite: Annotated[str, typer.Option(
             "--rewrite", help="How follow-ups become search queries: rules, llm or off")]
         = "rules", style: StyleOpt = None) -> None:
    """Interactive questions in the terminal, with follow-ups (/help inside; Ctrl-D leaves).
    With standard input piped: one question per line, each answer printed as `rag ask` does.
    Answers quote the sentence that holds them unless --style says otherwise."""
    from rag import chat as conversation

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        session = conversation.Session(
            _settings(index, model, style or Style(conversation.DEFAULT_STYLE)), model, k,
            rewrite, tty=interactive)
    except FAILURES as e:
        _fail(e, index)
    try:
        if interactive:
            typer.echo(conversation.welcome(session))
            session.run(conversation.terminal_reader(session.settings))
        else:
            # a line that is not UTF-8 is read with U+FFFD, not a traceback
            lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace") \
                if hasattr(sys.stdin, "buffer") else sys.stdin
            session.run(conversation.piped_reader(lines))
    finally:
        session.close()


@app.command()
def brief(topic: Annotated[str | None, typer.Argument()] = None, index: IndexOpt = None,
          model: ModelOpt = None, json_out: JsonOpt = False,
          fmt: Annotated[str, typer.Option("--format", help="md, json or html")] = "md",
          out: Annotated[Path | None, typer.Option("--out", help="Write to this file")] = None,
          max_points: Annotated[int, typer.Option("--max-points", min=1)] = 12,
          max_words: Annotated[int, typer.Option(
              "--max-words", min=1, help="Stop adding points past this many words")] = 300,
          ) -> None:
    """A cited briefing over the whole index, or over what concerns TOPIC."""
    from rag import brief as briefing
    from rag import render

    if json_out:
        fmt = "json"
    if fmt not in ("md", "json", "html"):
        typer.echo(f"rag: --format must be md, json or html, not {fmt!r}", err=True)
        raise typer.Exit(2)
    if fmt == "html" and out is None:
        typer.echo("rag: --format html needs --out FILE", err=True)
        raise typer.Exit(2)
    try:
        with _progress_bars() as bars:
            result = briefing.build(_settings(index, model), topic, max_points=max_points,
                                    max_words=max_words, progress=bars)
    except FAILURES as e:
        _fail(e, index)
    if fmt == "json":
        text = json_text(briefing.as_json(result)) + "\n"
    elif fmt == "html":
        text = render.briefing_html(result)
    else:
        text = render.briefing_markdown(result)
    if out is not None:
        try:
            write_file(out, text)
        except RagError as e:
            _fail(e)
        typer.echo(f"wrote {printable(out, one_line=True)}", err=True)
    else:
        sys.stdout.write(text)


@app.command("eval")
def eval_(qa_file: Path, index: IndexOpt = None, model: ModelOpt = None, k: KOpt = 5,
          json_out: JsonOpt = False,
          retrieval_only: Annotated[bool, typer.Option("--retrieval-only",
                                                       help="No model: retrieval only")] = False,
          threshold: Annotated[list[str] | None, typer.Option(
              "--threshold", help="metric=LIMIT (its own direction), metric>=MIN or "
                                  "metric<=MAX; repeatable, overrides --config")] = None,
          config: Annotated[Path | None, typer.Option(
              "--config", help="TOML file with a [thresholds] table")] = None,
          baseline: Annotated[Path | None, typer.Option(
              "--baseline", help="A previous --json output to compare against")] = None,
          tolerance: Annotated[float, typer.Option(help="Allowed drop against the baseline")]
          = 0.02,
          junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML")] = None,
          html: Annotated[Path | None, typer.Option(
              "--html", help="Write a self-contained HTML report")] = None,
          style: StyleOpt = None,
          ) -> None:
    """The regression evaluation over fixed Q&A pairs (exit 4 when a gate fails)."""
    import math

    from rag import evaluate, render

    if not math.isfinite(tolerance) or tolerance < 0:
        typer.echo(f"rag: --tolerance must be a finite number >= 0, not {tolerance}", err=True)
        raise typer.Exit(2)
    try:
        items = evaluate.load_qa(qa_file)
        thresholds = evaluate.load_thresholds(config) if config else {}
        for spec in threshold or []:
            name, limit = evaluate.parse_threshold(spec)
            thresholds[name] = limit
        base = None
        if baseline is not None:
            try:
                base = json.loads(baseline.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise RagError(f"{baseline}: not a readable eval --json output ({e})") from None
            if not isinstance(base, dict) or not isinstance(base.get("metrics"), dict):
                raise RagError(f"{baseline}: not an eval --json output (no \"metrics\" object)")
        with _progress_bars() as bars:
            report = evaluate.run(_settings(index, model, style), items,
                                  retrieval_only=retrieval_only, k=k,
                                  progress=None if bars is None else
                                  lambda done, total: bars("eval", done, total))
    except FAILURES as e:
        _fail(e, index)
    report["gates"] = evaluate.check_gates(report["metrics"], thresholds, base, tolerance,
                                           retrieval_only=retrieval_only)
    report["gates"]["baseline"] = str(baseline) if baseline else None
    failures = report["gates"]["failures"]
    try:
        if junit is not None:
            write_file(junit, render.eval_junit(items, report))
        if html is not None:
            write_file(html, render.eval_html(items, report, base,
                                              title=f"rag eval: {qa_file.name}"))
    except RagError as e:
        typer.echo(f"rag: cannot write the report: {printable(e, one_line=True)}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        _emit_json(report)
    else:
        typer.echo(printable(render.eval_table(report, base)))
    for name in report["gates"]["skipped"]:
        typer.echo(f"rag: eval: threshold on {name} skipped (--retrieval-only)", err=True)
    for f in failures:
        typer.echo(f"rag: eval gate failed: {printable(f, one_line=True)}", err=True)
    if failures:
        raise typer.Exit(4)


@app.command()
def models(json_out: JsonOpt = False) -> None:
    """The models this machine has: bundled, registered and dropped into models/."""
    from rag.registry import default_llm_name, list_models

    settings = Settings.from_env()
    specs = list_models(settings)
    default = default_llm_name(settings)
    if json_out:
        _emit_json({"default": default, "models": [
            {"name": s.name, "kind": s.kind, "installed": s.installed,
             "path": str(s.path) if s.path else None, "size_bytes": s.size_bytes,
             "prompt_style": s.prompt_style, "description": s.description} for s in specs]})
        return
    for s in specs:
        size = s.size_bytes
        shown = f"{size / 2**20:7.1f} MiB" if size else (
            "(assembled on first use)" if s.needs_assembly else "not installed")
        mark = "*" if s.name == default else " "
        typer.echo(f"{mark} {printable(s.name, one_line=True):<22} {s.kind:<9} {shown:>24}  "
                   f"{printable(s.description, one_line=True)}")


def main() -> None:
    try:
        app()
    except RagError as e:  # raised outside a command's own handling (Settings from env)
        typer.echo(f"rag: {printable(e, one_line=True)}", err=True)
        sys.exit(e.exit_code)
