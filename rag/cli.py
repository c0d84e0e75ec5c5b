"""The `rag` command: parse, call the library, print, map errors to exit codes.

Heavy modules (torch, llama_cpp, faiss, sentence_transformers) are imported inside the
commands that need them, so `rag --help` starts at once."""

from __future__ import annotations

import contextlib
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rag.config import Settings
from rag.errors import RagError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
    help="When the model's own words fail their checks: let the model choose a short run "
         "of the evidence (default) or quote the evidence")]


def _settings(index: Path | None, model: str | None = None,
              style: Style | None = None) -> Settings:
    return Settings.from_env(index_dir=index, model=model,
                             answer_style=style.value if style else None)


def _fail(err: RagError) -> None:
    typer.echo(f"rag: {err}", err=True)
    raise typer.Exit(err.exit_code)


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


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
            report = run([str(p) for p in paths], _settings(index), progress=bars)
    except RagError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("\nrag: interrupted; the index keeps what was committed: run the same "
                   "`rag ingest` again to finish", err=True)
        raise typer.Exit(130) from None
    for r in report.refused:
        typer.echo(f"rag: refused {r.path}: {r.reason}", err=True)
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
    from rag.ingest import open_store
    from rag.retrieve import Retriever

    try:
        settings = _settings(index)
        store, embedder = open_store(settings)
        hits = Retriever(store, embedder, late=settings.late_interaction).search(query, k)
    except RagError as e:
        _fail(e)
    if json_out:
        _emit_json({"query": query, "hits": [
            {"rank": h.rank, "source": h.chunk.source, "chunk_id": h.chunk.chunk_id,
             "score": round(h.score, 6), "text": h.chunk.text,
             "start": h.chunk.start, "end": h.chunk.end, "also_in": list(h.also_in)}
            for h in hits]})
        return
    for h in hits:
        typer.echo(f"{h.rank}. {h.chunk.source} ({h.chunk.chunk_id}, score {h.score:.4f})")
        typer.echo(f"   {h.chunk.text}\n")


def _print_answer(a) -> None:
    from rag.chat import format_answer

    typer.echo(format_answer(a))


@app.command()
def ask(question: str, index: IndexOpt = None, model: ModelOpt = None, k: KOpt = 5,
        json_out: JsonOpt = False, style: StyleOpt = None) -> None:
    """One grounded answer with numbered citations."""
    from rag.answer import Answerer, answer_json

    try:
        answerer = Answerer(_settings(index, model, style))
        answer = answerer.ask(question, k)
    except RagError as e:
        _fail(e)
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
    Answers quote their evidence unless --style says otherwise."""
    from rag import chat as conversation

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        session = conversation.Session(
            _settings(index, model, style or Style(conversation.DEFAULT_STYLE)), model, k,
            rewrite, tty=interactive)
    except RagError as e:
        _fail(e)
    try:
        if interactive:
            typer.echo(conversation.welcome(session))
            session.run(conversation.terminal_reader(session.settings))
        else:
            session.run(conversation.piped_reader(sys.stdin))
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
    except RagError as e:
        _fail(e)
    if fmt == "json":
        text = json.dumps(briefing.as_json(result), ensure_ascii=False) + "\n"
    elif fmt == "html":
        text = briefing.as_html(result)
    else:
        text = briefing.as_markdown(result)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)
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
          no_cache: Annotated[bool, typer.Option(
              "--no-cache", help="Ask the model every question, ignoring cached responses")]
          = False,
          style: StyleOpt = None,
          ) -> None:
    """The regression evaluation over fixed Q&A pairs (exit 4 when a gate fails)."""
    from rag import evaluate

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
                                  lambda done, total: bars("eval", done, total),
                                  use_cache=not no_cache)
    except RagError as e:
        _fail(e)
    report["gates"] = evaluate.check_gates(report["metrics"], thresholds, base, tolerance,
                                           retrieval_only=retrieval_only)
    report["gates"]["baseline"] = str(baseline) if baseline else None
    failures = report["gates"]["failures"]
    try:
        if junit is not None:
            junit.write_text(evaluate.junit_xml(items, report), encoding="utf-8")
        if html is not None:
            html.write_text(evaluate.html_report(items, report, base,
                                                 title=f"rag eval: {qa_file.name}"),
                            encoding="utf-8")
    except OSError as e:
        typer.echo(f"rag: cannot write the report: {e}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        _emit_json(report)
    else:
        typer.echo(evaluate.table(report, base))
    for name in report["gates"]["skipped"]:
        typer.echo(f"rag: eval: threshold on {name} skipped (--retrieval-only)", err=True)
    for f in failures:
        typer.echo(f"rag: eval gate failed: {f}", err=True)
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
        typer.echo(f"{mark} {s.name:<22} {s.kind:<9} {shown:>24}  {s.description}")


def main() -> None:
    app()
