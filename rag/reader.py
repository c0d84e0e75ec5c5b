"""The reader: given a question and a passage, where in the passage the answer starts and ends,
and how strongly the passage holds no answer at all.

It is the embedding model's own encoder (all-MiniLM-L6-v2) read with the question and the
passage side by side ([CLS] question [SEP] passage [SEP]), with low-rank adapters (LoRA) on
every product and a start/end head over the last token states, learned from SQuAD
even-numbered questions with hard negatives (bench/train_reader.py, `make train`). A window
that holds no answer puts its start and end on [CLS]; the "no answer" score is that pair's,
and a span's margin over it is what answerability and the support check read.

The adapters are merged into the encoder's weights once when the reader loads, so a question
costs one forward pass over its passages at the encoder's own speed (one an adapter, where
several are read as an ensemble; rag ships one)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.minilm import MiniLM

WEIGHTS = Path(__file__).resolve().parent / "weights" / "reader.safetensors"
CLS, SEP = 101, 102
MAX_LEN = 256  # question and passage window, in tokens
MAX_QUESTION = 64
STRIDE = 96  # a long passage is read in windows that overlap by this many tokens
MAX_ANSWER = 30  # tokens
# The encoder the adapters were trained on (a name in the model registry): the reader builds on
# it whatever model embeds the index.
READER_BASE = "all-minilm-l6-v2"


def load_base(path: Path) -> MiniLM:
    return MiniLM(path, max_seq_length=MAX_LEN)


@dataclass(frozen=True)
class Span:
    passage: int  # index into the passages read
    start: int  # character offsets into that passage
    end: int
    score: float  # start + end logit
    null: float  # the window's "no answer" score (start + end logit at [CLS])

    @property
    def margin(self) -> float:
        return self.score - self.null


class Reader:
    """The learned reader at inference: adapters merged, torch forward, no autograd."""

    def __init__(self, base: MiniLM, weights: Path | tuple[Path, ...] = WEIGHTS):
        """The reader of one adapter, or of several read as an ensemble: their start and end
        logits averaged (docs/experiments.md measures one)."""
        import torch
        from tokenizers import Tokenizer

        # the embedder's tokenizer cuts texts at the model's length; the reader windows them
        self.tokenizer = Tokenizer.from_str(base.tokenizer.to_str())
        self.tokenizer.no_truncation()
        self.adapters = [_Adapter(base, p) for p in _each(weights)]
        self._torch = torch

    def read(self, question: str, passages: list[str], top: int = 3) -> list[list[Span]]:
        """For each passage, its best `top` spans (best first) over all its windows, each with
        the no-answer score of the window it was read in."""
        q_ids = self.tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION]
        budget = MAX_LEN - len(q_ids) - 3
        windows: list[tuple[int, list[int], list[tuple[int, int]]]] = []
        encodings = self.tokenizer.encode_batch(passages, add_special_tokens=False) \
            if passages else []
        for p, enc in enumerate(encodings):
            ids, offs = enc.ids, enc.offsets
            starts = list(range(0, max(1, len(ids) - budget + STRIDE), STRIDE)) \
                if len(ids) > budget else [0]
            for s in starts:
                windows.append((p, ids[s:s + budget], offs[s:s + budget]))
        out: list[list[Span]] = [[] for _ in passages]
        if not windows:
            return out
        rows = [[CLS, *q_ids, SEP, *w, SEP] for _, w, _ in windows]
        states = [self._states(rows, a.engine) for a in self.adapters]
        first = len(q_ids) + 2
        for w, (p, ids, offs) in enumerate(windows):
            each = [a.logits(h[w, :first + len(ids)]) for a, h in zip(self.adapters, states)]
            logits = sum(each) / len(each) if len(each) > 1 else each[0]
            s_log, e_log = logits[:, 0], logits[:, 1]
            null = float(s_log[0] + e_log[0])
            out[p].extend(_best_spans(s_log[first:], e_log[first:], offs, p, null, top))
        for spans in out:
            spans.sort(key=lambda s: -s.margin)
            del spans[top:]
        return out

    def _states(self, rows: list[list[int]], engine) -> np.ndarray:
        from rag.minilm import _padded

        torch = self._torch
        from rag.torch_forward import compiled

        ids, mask = (torch.from_numpy(a) for a in _padded(rows))
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            _, states = compiled()(ids, mask.bool(), *engine.params)
        return states.numpy()


class _Adapter:
    """One trained adapter merged into a copy of the base encoder, with its span head."""

    def __init__(self, base: MiniLM, weights: Path):
        from rag.minilm import TorchMiniLM

        if not weights.exists():
            raise RagError(f"{weights}: the reader's weights are missing (run `make train`)")
        tensors = load_adapter(weights)
        scale = float(_metadata(weights).get("scale", 1.0))
        merged = copy.copy(base)
        layers = []
        for i, layer in enumerate(base.layers):
            layer = list(layer)
            for j, at in enumerate((0, 2, 6, 8)):  # qkv, attention out, inner, output
                a = tensors[f"lora.{i}.{j}.a"].float().numpy()
                b = tensors[f"lora.{i}.{j}.b"].float().numpy()
                layer[at] = layer[at] + scale * (b @ a).T  # (in, out), as MiniLM keeps it
                layer[at + 1] = tensors[f"bias.{i}.{j}"].float().numpy()
            for j, at in enumerate((4, 5, 10, 11)):
                layer[at] = tensors[f"norm.{i}.{j}"].float().numpy()
            layers.append(tuple(layer))
        merged.layers = layers
        merged.emb_ln = (tensors["emb_norm.weight"].float().numpy(),
                         tensors["emb_norm.bias"].float().numpy())
        self.engine = TorchMiniLM(merged, bf16=False)
        self.head_w = tensors["head.weight"].float().numpy().T  # (hidden, 2)
        self.head_b = tensors["head.bias"].float().numpy()

    def logits(self, states: np.ndarray) -> np.ndarray:
        """Start and end logits (length, 2) from a window's last token states."""
        return states @ self.head_w + self.head_b


def _best_spans(s_log: np.ndarray, e_log: np.ndarray, offs, p: int, null: float,
                top: int) -> list[Span]:
    n = len(s_log)
    if n == 0:
        return []
    # score[i, j] = s[i] + e[j] for i <= j < i + MAX_ANSWER
    grid = s_log[:, None] + e_log[None, :]
    i, j = np.indices(grid.shape)
    grid[(j < i) | (j >= i + MAX_ANSWER)] = -np.inf
    flat = np.argsort(grid, axis=None)[::-1][:top * 4]
    spans: list[Span] = []
    for f in flat:
        a, b = divmod(int(f), n)
        if not np.isfinite(grid[a, b]):
            break
        span = Span(p, int(offs[a][0]), int(offs[b][1]), float(grid[a, b]), null)
        if any(s.start < span.end and span.start < s.end for s in spans):
            continue  # a run overlapping a better one says the same thing
        spans.append(span)
        if len(spans) == top:
            break
    return spans


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("recipe", "{}"))


def _each(weights: Path | tuple[Path, ...]) -> tuple[Path, ...]:
    """One adapter's path, or an ensemble's, as a tuple."""
    return (weights,) if isinstance(weights, Path) else tuple(weights)


def checksum(weights: Path | tuple[Path, ...] = WEIGHTS) -> str:
    """The adapter's sha256; an ensemble's, of its adapters' sha256 in order."""
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in _each(weights)]
    return digests[0] if len(digests) == 1 else \
        hashlib.sha256(" ".join(digests).encode()).hexdigest()


class ReaderModel:
    """The reader for training: the base encoder frozen, LoRA adapters (A: rank x in, B: out x
    rank, B starting at zero), every bias and layer norm, and the head trained. Built on
    rag.torch_forward.forward, the same arithmetic the Reader runs once merged."""

    def __init__(self, base: MiniLM, rank: int = 32, train: bool = True, scale: float = 1.0):
        import torch

        self.base, self.rank, self.scale = base, rank, scale
        self.heads, self.eps = base.heads, base.eps

        def t(a, grad=False):
            return torch.nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float32)),
                                      requires_grad=grad)

        self.word, self.position, self.type0 = t(base.word), t(base.position), t(base.type0)
        self.emb_w, self.emb_b = t(base.emb_ln[0], train), t(base.emb_ln[1], train)
        g = torch.Generator().manual_seed(0)
        self.frozen, self.lora, self.biases, self.norms = [], [], [], []
        for layer in base.layers:
            for at in (0, 2, 6, 8):
                w = t(layer[at].T)  # (out, in)
                self.frozen.append(w)
                out_f, in_f = w.shape
                a = torch.nn.Parameter(torch.randn(rank, in_f, generator=g) / np.sqrt(in_f))
                b = torch.nn.Parameter(torch.zeros(out_f, rank))
                self.lora.append((a, b))
                self.biases.append(t(layer[at + 1], train))
            self.norms += [t(layer[at], train) for at in (4, 5, 10, 11)]
        self.head = torch.nn.Linear(base.dimension, 2)
        torch.nn.init.normal_(self.head.weight, std=0.02)
        torch.nn.init.zeros_(self.head.bias)

    def load(self, tensors: dict) -> None:
        """Start from the tensors `load_adapter` read (a trained adapter of the same rank)."""
        import torch

        with torch.no_grad():
            self.emb_w.copy_(tensors["emb_norm.weight"])
            self.emb_b.copy_(tensors["emb_norm.bias"])
            self.head.weight.copy_(tensors["head.weight"])
            self.head.bias.copy_(tensors["head.bias"])
            for k, (a, b) in enumerate(self.lora):
                i, j = divmod(k, 4)
                a.copy_(tensors[f"lora.{i}.{j}.a"])
                b.copy_(tensors[f"lora.{i}.{j}.b"])
                self.biases[k].copy_(tensors[f"bias.{i}.{j}"])
                self.norms[k].copy_(tensors[f"norm.{i}.{j}"])

    def parameters(self):
        yield from (self.emb_w, self.emb_b)
        for a, b in self.lora:
            yield a
            yield b
        yield from self.biases
        yield from self.norms
        yield from self.head.parameters()

    def __call__(self, ids, mask):
        """Start and end logits (n, length), -inf-like on padding. The same operators as
        rag.torch_forward.forward, each product x W^T + b plus the adapter's scale (x A^T) B^T
        kept apart, so the backward pass never forms a gradient for the frozen W."""
        import torch
        import torch.nn.functional as F

        n, length = ids.shape
        hidden = self.word.shape[1]

        def linear(x, k):
            a, b = self.lora[k]
            return F.linear(x, self.frozen[k], self.biases[k]) + \
                self.scale * F.linear(F.linear(x, a), b)

        h = self.word[ids] + self.position[:length] + self.type0
        h = F.layer_norm(h, [hidden], self.emb_w, self.emb_b, self.eps).reshape(n * length, -1)
        attend = mask[:, None, None, :]
        for layer in range(len(self.frozen) // 4):
            at = 4 * layer
            y = linear(h, at)
            q, k, v = y.view(n, length, 3, self.heads, hidden // self.heads) \
                .permute(2, 0, 3, 1, 4).unbind(0)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
            ctx = ctx.transpose(1, 2).reshape(n * length, hidden)
            x = F.layer_norm(h + linear(ctx, at + 1), [hidden], self.norms[at],
                             self.norms[at + 1], self.eps)
            y = linear(F.gelu(linear(x, at + 2)), at + 3)
            h = F.layer_norm(x + y, [hidden], self.norms[at + 2], self.norms[at + 3], self.eps)
        logits = self.head(h.view(n, length, hidden))
        logits = logits.masked_fill(~mask[:, :, None], torch.finfo(logits.dtype).min)
        return logits[..., 0], logits[..., 1]


def save_adapter(model: ReaderModel, path: Path, recipe: dict) -> None:
    """The adapters, biases, norms and head as safetensors (the base
    encoder's weights are not copied: they come with the embedding model's package)."""
    import torch
    from safetensors.torch import save_file

    tensors = {"emb_norm.weight": model.emb_w, "emb_norm.bias": model.emb_b,
               "head.weight": model.head.weight, "head.bias": model.head.bias}
    per_layer = 4
    for k, (a, b) in enumerate(model.lora):
        i, j = divmod(k, per_layer)
        tensors[f"lora.{i}.{j}.a"] = a
        tensors[f"lora.{i}.{j}.b"] = b
        tensors[f"bias.{i}.{j}"] = model.biases[k]
    for k, n in enumerate(model.norms):
        i, j = divmod(k, per_layer)
        tensors[f"norm.{i}.{j}"] = n
    # LoRA factors in int8, a float32 scale a row (the file stays under 2 MB); norms, biases
    # and the head in float32, where small shifts move every logit
    out: dict = {}
    for k, v in tensors.items():
        v = v.detach().to(torch.float32)
        if k.startswith("lora."):
            scale = v.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
            out[k] = torch.round(v / scale).to(torch.int8).contiguous()
            out[k + ".scale"] = scale.contiguous()
        else:
            out[k] = v.contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(out, str(tmp), metadata={"recipe": json.dumps({**recipe, "scale": model.scale})})
    tmp.replace(path)


def load_adapter(path: Path) -> dict:
    """The tensors `save_adapter` wrote, in float32 (the LoRA factors multiplied back by their
    row scales)."""
    from safetensors.torch import load_file

    raw = load_file(str(path))
    return {k: v.float() * raw[k + ".scale"] if k + ".scale" in raw else v.float()
            for k, v in raw.items() if not k.endswith(".scale")}
