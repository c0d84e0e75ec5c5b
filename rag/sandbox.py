"""Files whose parsers can blow up are read in a worker process, within a budget.

A PDF whose pages share one compressed content stream costs seconds a page; unclosed nested
HTML tags or a small .docx holding megabytes of XML take gigabytes. So PDF, Word and HTML
files are parsed by `rag.loaders.load` in a worker process whose address space is limited
(RLIMIT_AS) and which is killed when one file takes longer than its time budget; the file is
then refused by name and the ingest goes on with a fresh worker. Plain text and JSON Lines
are parsed here, in one linear pass with bounded memory, and need no worker.

The budget lives in Settings (file_seconds, file_memory_mb; RAG_FILE_SECONDS,
RAG_FILE_MEMORY_MB)."""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rag.errors import InputRefused
from rag.loaders import DOCX_SUFFIXES, HTML_SUFFIXES, PDF_SUFFIXES, load_all
from rag.types import Document

SANDBOXED_SUFFIXES = PDF_SUFFIXES | DOCX_SUFFIXES | HTML_SUFFIXES
STARTUP_S = 120.0  # how long a worker may take to start and import its parsers
_HEADER = struct.Struct("<Q")


class Reader:
    """Reads one file at a time: the sandboxed formats in the worker, the rest in-process.
    Use as a context manager (the worker is stopped on leaving)."""

    def __init__(self, seconds: float, memory_mb: int):
        self.seconds = seconds
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def load_all(self, path: Path) -> Iterator[Document | InputRefused]:
        if path.suffix.lower() not in SANDBOXED_SUFFIXES:
            yield from load_all(path)
            return
        yield self._load(path)

    def _load(self, path: Path) -> Document | InputRefused:
        shown = str(path)
        try:
            proc = self._worker()
        except (TimeoutError, OSError, EOFError, pickle.UnpicklingError):
            self._kill()
            return InputRefused(shown, "the worker process that reads PDF, Word and HTML "
                                       "files could not be started")
        request = pickle.dumps(shown, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_HEADER.pack(len(request)) + request)
            proc.stdin.flush()
            reply = _read_reply(proc.stdout, time.monotonic() + self.seconds)
        except TimeoutError:
            self._kill()
            return InputRefused(shown, f"took longer than {self.seconds:g} s to read (the "
                                       "time budget for one file; RAG_FILE_SECONDS raises it)")
        except (OSError, EOFError, pickle.UnpicklingError):
            code = self._kill()
            return InputRefused(shown, _death(code, self.memory_mb))
        kind, value = reply
        if kind == "document":
            return value
        if kind == "memory":
            self._kill()
            return InputRefused(shown, _over_memory(self.memory_mb))
        return InputRefused(shown, value)

    def _worker(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from rag.sandbox import serve; serve()",
             str(self.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True)
        # the worker says it is ready once its parsers are imported: starting it (seconds on
        # a busy machine) is not counted against the first file's budget
        _read_reply(self._proc.stdout, time.monotonic() + max(STARTUP_S, self.seconds))
        return self._proc

    def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return code


def _over_memory(memory_mb: int) -> str:
    return (f"needs more than {memory_mb} MB of memory to read (the memory budget for one "
            "file; RAG_FILE_MEMORY_MB raises it)")


def _death(code: int | None, memory_mb: int) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL, signal.SIGBUS):
            return f"the parser crashed on it ({name}; {_over_memory(memory_mb)}?)"
        return f"the parser was stopped ({name})"
    return f"the parser stopped on it (exit {code})"


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    parts, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        block = os.read(fd, min(n - got, 1 << 20))
        if not block:
            raise EOFError
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_reply(stream, deadline: float):
    fd = stream.fileno()
    size, = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    # the reply is written whole once parsing is done: a little more time to carry it over
    return pickle.loads(_read_exact(fd, size, max(deadline, time.monotonic() + 30)))


# -- the worker --------------------------------------------------------------------------------

def serve() -> None:
    """The worker's loop: a path in, ("document", Document) | ("refused", reason) |
    ("memory", None) out, until its input closes."""
    import resource

    from rag.loaders import load

    limit = int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inp = sys.stdin.buffer
    # the replies go out on a private copy of standard output; whatever a parser or a C
    # library prints goes to standard error (discarded), never into the replies
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for parser in ("pypdf", "bs4", "docx"):  # imported before the first file's clock starts
        try:
            __import__(parser)
        except ImportError:
            pass
    ready = pickle.dumps(("ready", None))
    out.write(_HEADER.pack(len(ready)) + ready)
    out.flush()
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        path = pickle.loads(inp.read(_HEADER.unpack(head)[0]))
        try:
            reply: tuple = ("document", load(Path(path)))
        except InputRefused as e:
            reply = ("refused", e.reason)
        except MemoryError:
            reply = ("memory", None)
        except Exception as e:  # anything a parser raises: this file is refused, not the run
            reply = ("refused", f"could not be read ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:160]})")
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            data = pickle.dumps(("memory", None))
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()
        if reply[0] == "memory":
            return
