"""One Settings object, read once from the environment (and CLI flags), passed down."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

# The tool never reaches a network: set before any Hugging Face library is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path:
    """The top-level folder `name` (prompts, models) as the package ships it: rag/_<name>
    inside an installed wheel (pyproject maps the folder there), the folder itself in a source
    checkout or an editable install."""
    packaged = Path(str(resources.files("rag") / f"_{name}"))
    return packaged if packaged.is_dir() else PROJECT_ROOT / name


def cache_dir() -> Path:
    """rag's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache): assembled models,
    chat history, the system message's evaluated state."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag"


def free_cores() -> int:
    """The cores this process may use (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def auto_threads(limit: int = 4) -> int:
    """Threads for llama.cpp and torch: the allowed cores less those other processes keep busy
    (the 1-minute load average, rounded), at least 1. Measured here: llama.cpp on 2 threads
    falls from 100 to 3-47 tokens/s when another process holds one of two cores, while 1
    thread keeps 47-75. Decided once per process, so a loaded model is never reloaded."""
    cores = free_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(limit, cores - busy))


def _env_number(name: str, kind: type, low: float, high: float):
    """An environment variable read as a number within [low, high], or a usage error."""
    from rag.errors import UsageError

    raw = os.environ[name].strip()
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not (low <= value <= high):  # also NaN
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"{name}={raw!r}: must be {what} from {low:g} to {high:g}")
    return value


@dataclass(frozen=True)
class RetrievalTuning:
    """The numbers retrieval was tuned with on SQuAD's even-numbered questions (how:
    docs/retrieval.md); a benchmark tries others with Settings.with_(retrieval=...)."""
    dense_weight: float = 0.5  # chunk vectors against BM25's 1 - this, when two lists are fused
    # the lists' weights: chunk vectors, BM25, best sentences, late interaction (those searched)
    list_weights: tuple[float, float, float, float] = (0.25, 0.5, 0.5, 0.5)
    pool_idf_weight: float = 3.0  # BM25 over the candidates: idf x (1 - share holding it) ** this
    context_weight: float = 0.5  # BM25 counts a chunk's neighbouring text at this weight
    sentence_weight: float = 0.5  # the best single sentence's share of the question, in fusion
    rerank: int = 20  # the fused passages that the sentence test re-orders
    duplicate_cosine: float = 0.92  # passages this close are one hit (the other sources kept)


@dataclass(frozen=True)
class Settings:
    index_dir: Path = Path(".rag")
    model: str | None = None  # None: the registry's default_llm
    embedding_model: str = "all-minilm-l6-v2"
    models_dir: Path = shipped_dir("models")  # registry.toml and GGUF files dropped in
    prompts_dir: Path = shipped_dir("prompts")
    k: int = 5
    chunk_tokens: int = 128  # in the embedding model's own tokens
    # Sentences a chunk repeats from the one before. None: the full-text index already reads
    # each chunk with its neighbours, and on SQuAD dev one sentence of overlap bought nothing
    # (all 5,285 even questions R@5 0.965 with it, 0.964 without; odd 0.961 / 0.960; seeds
    # eval identical) for 8% more chunks and 11% more ingest time (47 s -> 42 s).
    chunk_overlap_sentences: int = 0
    n_threads: int = 0  # 0: the cores free when the process starts (auto_threads)
    n_ctx: int = 2048
    seed: int = 1234
    temperature: float = 0.0
    max_answer_tokens: int = 48
    # "short": the reader's span; "quote": the sentence that holds it
    answer_style: str = "short"
    # Late interaction as a fourth retrieval list (rag.retrieve.late_interaction): off by
    # default, since it costs recall@5 on SQuAD's held-out odd questions (0.978 -> 0.972).
    # RAG_LATE_INTERACTION=1 turns it on; an ingest with it on writes (or fills in) the token
    # codes it reads.
    late_interaction: bool = False
    retrieval: RetrievalTuning = RetrievalTuning()
    # The budget for reading one PDF, Word or HTML file (rag.sandbox): past it the file is
    # refused by name. A 500-page PDF of 45 lines a page (2 million characters) reads in 4.8 s
    # here at nice 19 on a loaded machine, so 120 s leaves 25x; a PDF whose pages share one
    # content stream costs ~6 s a page and is stopped. A 7.3 MB HTML page peaks at 152 MiB,
    # so 2048 MB holds the 32 MB limit's pages, while 1 MB of unclosed nested tags takes
    # 277 MiB (and 25 s): a few MB of them meet one budget or the other.
    file_seconds: float = 120.0
    file_memory_mb: int = 2048

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        values: dict = {}
        if env.get("RAG_INDEX"):
            values["index_dir"] = Path(env["RAG_INDEX"])
        if env.get("RAG_MODEL"):
            values["model"] = env["RAG_MODEL"]
        if env.get("RAG_MODELS_DIR"):
            values["models_dir"] = Path(env["RAG_MODELS_DIR"])
        if env.get("RAG_ANSWER_STYLE"):
            values["answer_style"] = env["RAG_ANSWER_STYLE"]
        if env.get("RAG_LATE_INTERACTION"):
            values["late_interaction"] = env["RAG_LATE_INTERACTION"] not in ("0", "false", "no")
        if env.get("RAG_THREADS"):
            values["n_threads"] = _env_number("RAG_THREADS", int, 1, 256)
        if env.get("RAG_FILE_SECONDS"):
            values["file_seconds"] = _env_number("RAG_FILE_SECONDS", float, 0.1, 86400)
        if env.get("RAG_FILE_MEMORY_MB"):
            values["file_memory_mb"] = _env_number("RAG_FILE_MEMORY_MB", int, 256, 2**20)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def threads(self) -> int:
        return self.n_threads if self.n_threads > 0 else auto_threads()
