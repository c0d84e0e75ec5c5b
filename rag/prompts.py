"""Loads and renders the prompt files in prompts/. Rendering is strict: a placeholder without
a value is an error, never an empty string. Placeholders are {name}; {{ and }} are braces."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from rag.errors import PromptError

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@lru_cache(maxsize=64)
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load(prompts_dir: Path, name: str) -> str:
    path = prompts_dir / name
    if not path.is_file():
        raise PromptError(f"prompt file {path} not found: restore it from the rag repository")
    return _read(path)


def placeholders(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


def render(template: str, values: dict[str, object], name: str = "prompt") -> str:
    missing = placeholders(template) - values.keys()
    if missing:
        raise PromptError(f"{name} needs a value for {', '.join(sorted(missing))}")

    def sub(m: re.Match) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return str(values[m.group(1)])

    return _PLACEHOLDER.sub(sub, template)


def render_file(prompts_dir: Path, name: str, values: dict[str, object]) -> str:
    return render(load(prompts_dir, name), values, name)
