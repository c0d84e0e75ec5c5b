"""Files -> Documents. All knowledge of file formats lives here."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from rag.errors import InputRefused
from rag.types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES
MAX_FILE_BYTES = 200 * 1024 * 1024


def discover(paths: list[str | Path]) -> tuple[list[Path], list[InputRefused]]:
    """Expand files and folders (recursively) into the supported files they hold, sorted."""
    found: list[Path] = []
    refused: list[InputRefused] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            refused.append(InputRefused(str(raw), "no such file or folder"))
        elif path.is_dir():
            found.extend(_walk(path))
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            found.append(path.resolve())
        else:
            refused.append(InputRefused(
                str(raw), f"unsupported file type {path.suffix or '(none)'!r}; "
                f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"))
    unique = sorted(set(found))
    return unique, refused


def _walk(folder: Path) -> Iterator[Path]:
    # followlinks=False: a symlink loop cannot make the walk endless.
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES:
                yield p.resolve()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(path: Path) -> Document:
    """Read one file. Raises InputRefused naming the file and the reason."""
    shown = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputRefused(shown, f"file is {size // 2**20} MiB; the limit is "
                               f"{MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as e:
        raise InputRefused(shown, f"cannot be read ({e.strerror or e})") from e
    if not data.strip():
        raise InputRefused(shown, "empty file")
    text = _decode(data, shown)
    if not text.strip():
        raise InputRefused(shown, "no text in file")
    return Document(source=shown, title=_title(text, path), text=text, sha256=file_sha256(data))


def _decode(data: bytes, shown: str) -> str:
    if b"\x00" in data[:8192]:
        raise InputRefused(shown, "binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        raise InputRefused(shown, "not UTF-8 text") from None
    best = from_bytes(data).best()
    if best is None:
        raise InputRefused(shown, "not text in any known encoding")
    return str(best)


def _title(text: str, path: Path) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return path.stem
