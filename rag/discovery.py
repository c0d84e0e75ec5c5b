"""Files and folders -> the supported files they hold. Folders are walked recursively,
following symlinks but never around a loop and never into a hidden folder; what cannot be used
becomes an InputRefused naming it, with a one-line reason, and what failed for an
operating-system reason that may pass is marked transient (rag.ingest keeps what the index
holds under it)."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from rag.errors import InputRefused
from rag.loaders import JSONL_SUFFIXES, READ_BLOCK, SUPPORTED_SUFFIXES, os_reason, unsupported


def discover(paths: list[str | Path]) -> tuple[list[Path], list[InputRefused]]:
    """Expand files and folders (recursively, following symlinks but never around a loop) into
    the supported files they hold, sorted and without duplicates."""
    found: list[Path] = []
    refused: list[InputRefused] = []
    visited: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        try:
            st = path.stat()
        except OSError as e:
            refused.append(_os_refusal(str(raw), e, _missing_reason(path, e)))
            continue
        if stat.S_ISDIR(st.st_mode):
            found.extend(_walk(path, visited, refused))
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            _add_file(path, st, found, refused)
        else:
            refused.append(InputRefused(str(raw), unsupported(path)))
    return sorted(set(found)), refused


def _add_file(path: Path, st: os.stat_result, found: list[Path],
              refused: list[InputRefused]) -> None:
    """A file, or a link to one, named as the user named it when it cannot be used."""
    real = Path(os.path.realpath(path))
    if not stat.S_ISREG(st.st_mode):
        refused.append(InputRefused(str(path), "not a regular file (a pipe, device or socket)"))
    elif real.suffix.lower() not in SUPPORTED_SUFFIXES:
        refused.append(InputRefused(str(path), f"links to {real}: {unsupported(real)}"))
    else:
        found.append(real)


def _walk(folder: Path, visited: set[tuple[int, int]],
          refused: list[InputRefused]) -> Iterator[Path]:
    real = os.path.realpath(folder)
    try:
        st = os.stat(real)
    except OSError as e:
        refused.append(_os_refusal(str(folder), e, os_reason(e)))
        return
    if (st.st_dev, st.st_ino) in visited:  # a second link to a folder already read
        return
    visited.add((st.st_dev, st.st_ino))

    def unreadable(e: OSError) -> None:  # what the index holds under it is kept (rag.ingest)
        refused.append(_os_refusal(e.filename or str(folder), e, os_reason(e)))

    for root, dirs, files in os.walk(folder, followlinks=False, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            p = Path(root) / d
            if p.is_symlink():  # os.walk does not descend into it; we do, once
                yield from _walk_link(p, visited, refused)
        for name in sorted(files):
            p = Path(root) / name
            if name.startswith(".") or p.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            try:
                st = p.stat()
            except OSError as e:
                refused.append(_os_refusal(str(p), e, _missing_reason(p, e)))
                continue
            if p.is_symlink() and _into_hidden(p):
                continue
            if stat.S_ISREG(st.st_mode) and p.suffix.lower() in JSONL_SUFFIXES \
                    and not _holds_documents(p):
                continue  # other JSON Lines (a Q&A file beside the documents): not ours
            kept: list[Path] = []
            _add_file(p, st, kept, refused)
            yield from kept


def _walk_link(link: Path, visited: set[tuple[int, int]],
               refused: list[InputRefused]) -> Iterator[Path]:
    try:
        target = os.path.realpath(link, strict=True)
    except OSError as e:
        refused.append(_os_refusal(str(link), e, _missing_reason(link, e)))
        return
    if _into_hidden(link):
        return  # a hidden folder is skipped, however it is reached
    here = os.path.realpath(link.parent)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        refused.append(InputRefused(str(link), f"symlink loop: leads back to {target}"))
        return
    yield from _walk(Path(target), visited, refused)


def _holds_documents(path: Path) -> bool:
    """Whether a JSON Lines file found in a folder is a document export: its first record
    has a "text" field (or cannot be read, and then each record is refused by name)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return True
            for line in iter(lambda: f.readline(READ_BLOCK), b""):
                if line.strip():
                    record = json.loads(line)
                    return not isinstance(record, dict) or "text" in record
    except (OSError, ValueError, RecursionError):
        return True
    return True


def _into_hidden(link: Path) -> bool:
    """Whether a symlink leads into a hidden folder (or to a hidden file) that the folder
    holding it is not itself inside: ~/.ssh reached through a link is skipped as ~/.ssh is."""
    target = os.path.realpath(link)
    here = os.path.realpath(link.parent)
    try:
        common = os.path.commonpath([target, here])
    except ValueError:
        common = os.sep
    rest = Path(os.path.relpath(target, common)).parts
    return any(part.startswith(".") and part not in (".", "..") for part in rest)


#XX the thing is gone for good; any other OSError may pass (permissions, I/O)
_GONE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


def _os_refusal(path: str, e: OSError, reason: str) -> InputRefused:
    return InputRefused(path, reason, transient=e.errno not in _GONE)


def _missing_reason(path: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT and path.is_symlink():
        return f"broken symlink (its target {os.readlink(path)} does not exist)"
    if e.errno == errno.ENOENT:
        return "no such file or folder"
    return os_reason(e)
