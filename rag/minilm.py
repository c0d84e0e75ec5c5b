"""The BERT encoder of a sentence-transformers model (MiniLM) as rag runs it: TorchMiniLM, a
forward pass written in torch, embeds every text (chunks at ingest, questions, briefing
sentences) without sentence-transformers or transformers (~3.4 s less to import and load);
MiniLM holds the weights and the tokenizer, and the same forward in numpy, the torch-free
reference the engine is tested and benchmarked against.

It runs the same weights (model.safetensors) and the same tokenizer (tokenizer.json) as
SentenceTransformer.encode, then mean pooling over the real tokens and L2 normalisation, as the
model's modules.json says (Transformer -> Pooling(mean) -> Normalize). Its vectors match
sentence-transformers' to float32 rounding in float32, and within bfloat16's in bfloat16
(tests/test_minilm.py), so an index built by one is searched by the other.

Only plain BERT encoders with mean pooling are handled; `supports()` says whether a model
folder is one, and the Embedder falls back to sentence-transformers when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Sort-by-length batches of this many texts: little padding, matrices big enough for BLAS.
BATCH = 32

# Late interaction (rag.retrieve): a passage is read token by token against the question. Its
# tokens are kept as the signs of their last states (one bit a dimension: 48 bytes a token for
# MiniLM), all but the function words and punctuation, which match anything and tell nothing.
LATE_SKIP = frozenset("""a an and are as at be been being but by did do does for from had has
have how i if in into is it its of on or over that the their them then there these they this
those to was were what when where which who whom whose why will with would you your s
. , ? ! ; : ' " ( ) - [ ] ` ’ “ ”""".split())


def supports(path: Path) -> bool:
    """A BERT model folder whose sentence pipeline is mean pooling, optionally normalised."""
    try:
        cfg = json.loads((path / "config.json").read_text())
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = {}
        for m in modules:
            if m["type"].endswith("Pooling"):
                pooling = json.loads((path / m["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError):
        return False
    return (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
            and kinds in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
            and pooling.get("pooling_mode_mean_tokens") is True
            and not any(pooling.get(k) for k in ("pooling_mode_cls_token",
                                                 "pooling_mode_max_tokens",
                                                 "pooling_mode_mean_sqrt_len_tokens")))


def set_blas_threads(n: int) -> bool:
    """Cap numpy's OpenBLAS at n threads (the cores free, rag.config.auto_threads): OpenBLAS
    threads wait on each other at every product, so with a core taken by another process two
    of them run slower than one. False when numpy's BLAS is not an OpenBLAS found here."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*"))
    for lib_path in libs:
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(int(n))
                return True
    return False


class MiniLM:
    def __init__(self, path: Path, max_seq_length: int = 256):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((path / "config.json").read_text())
        modules = json.loads((path / "modules.json").read_text())
        self.normalize = any(m["type"].endswith("Normalize") for m in modules)
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_len = min(int(max_seq_length), int(cfg["max_position_embeddings"]))
        w = load_file(str(path / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        w = {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."

            def g(name, p=p):
                return w[p + name]

            # q, k, v as one (hidden, 3*hidden) matrix: one matmul instead of three
            qkv = np.concatenate([g("attention.self.query.weight"),
                                  g("attention.self.key.weight"),
                                  g("attention.self.value.weight")]).T.copy()
            qkv_b = np.concatenate([g("attention.self.query.bias"),
                                    g("attention.self.key.bias"),
                                    g("attention.self.value.bias")])
            self.layers.append((
                qkv, qkv_b,
                g("attention.output.dense.weight").T.copy(), g("attention.output.dense.bias"),
                g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias"),
                g("intermediate.dense.weight").T.copy(), g("intermediate.dense.bias"),
                g("output.dense.weight").T.copy(), g("output.dense.bias"),
                g("output.LayerNorm.weight"), g("output.LayerNorm.bias")))
        self.dimension = int(cfg["hidden_size"])
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(self.max_len)
        self.tokenizer = tok

    def encode(self, texts: Sequence[str], batch_size: int = BATCH) -> np.ndarray:
        """Float32 sentence vectors, one row per text, unit length when the model normalises."""
        return _by_length(self.tokenizer, texts, self.dimension, batch_size, self._forward)

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        ids, mask = _padded(batch)
        n, length = ids.shape
        h = self.word[ids] + self.position[:length] + self.type0
        h = _layer_norm(h, *self.emb_ln, self.eps)
        heads, d = self.heads, h.shape[-1] // self.heads
        # masked keys get float32's most negative value, as transformers does
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        for (qkv, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b) in self.layers:
            x = h.reshape(n * length, -1)
            # contiguous per-head blocks: numpy's stacked matmul only reaches BLAS on those
            qkv_h = np.ascontiguousarray(
                (x @ qkv + qkv_b).reshape(n, length, 3, heads, d).transpose(2, 0, 3, 1, 4))
            q, v = qkv_h[0] * scale, qkv_h[2]
            k_t = np.ascontiguousarray(qkv_h[1].transpose(0, 1, 3, 2))
            scores = q @ k_t
            scores += bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, -1)
            x = _layer_norm(x + ctx @ o_w + o_b, ln1_w, ln1_b, self.eps)
            inner = _gelu(x @ i_w + i_b)
            h = _layer_norm(x + inner @ f_w + f_b, ln2_w, ln2_b, self.eps).reshape(n, length, -1)
        pooled = (h * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32, copy=False)


def _by_length(tokenizer, texts: Sequence[str], dimension: int, batch_size: int,
               forward: Callable[[list[list[int]]], np.ndarray],
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """`forward` over batches of texts of like token counts (little padding), each text's
    vector back in its own row. Longest first: the first batch takes the most memory, and
    the later, smaller ones fit in what it freed (shortest first, each batch's larger
    buffers are new: SQuAD ingest peaked at 1.97 GiB against 0.90)."""
    out = np.zeros((len(texts), dimension), dtype=np.float32)
    if not len(texts):
        return out
    if len(texts) == 1:  # a question: encode_batch's thread pool costs more than it saves
        ids = [tokenizer.encode(texts[0]).ids]
    else:
        ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
    for rows in _batches_by_length(ids, batch_size):
        out[rows] = forward([ids[i] for i in rows])
        if progress:
            progress(len(rows))
    return out


def _batches_by_length(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row numbers of `ids` in batches of like token counts, longest first (`_by_length`)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _padded(batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest (with [PAD], id 0 in BERT vocabularies) and the mask
    of real tokens (1.0)."""
    n, length = len(batch), max(len(x) for x in batch)
    ids = np.zeros((n, length), dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.float32)
    for i, x in enumerate(batch):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1.0
    return ids, mask


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's "gelu"; erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7),
    which keeps scipy out of the import."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    erf_abs = 1.0 - poly * np.exp(-z * z)
    erf = np.where(x >= 0, erf_abs, -erf_abs)
    return np.float32(0.5) * x * (1.0 + erf)


class TorchMiniLM:
    """The forward pass rag embeds with, in torch, without sentence-transformers and
    transformers (~3.4 s more to import and load).

    In bfloat16 (`bf16`, where the CPU computes it natively) the weights are packed once into
    oneDNN's blocked layout (torch.ops.mkldnn), so a product does not re-lay 1-2 MB of weights
    for a 15-token question the way a plain matmul does; GELU runs inside the product (without
    oneDNN, plain bfloat16 products). Layer norms, softmax and the residual sums stay in
    float32, as under torch.autocast. Without `bf16` it is plain float32 torch,
    sentence-transformers' own arithmetic."""

    def __init__(self, base: MiniLM, bf16: bool = False):
        import torch

        self.base = base
        self.dimension, self.normalize = base.dimension, base.normalize
        self.heads, self.eps, self.max_len = base.heads, base.eps, base.max_len
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self._packed = bf16 and _mkldnn_bf16(torch)

        def tensor(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a))

        def linear(w_in_out: np.ndarray, b: np.ndarray) -> tuple:
            w = tensor(w_in_out.T).to(self.dtype)  # (out, in), as torch keeps it
            if self._packed:  # 16: a question's rows, the layout's hint; any batch runs on it
                w = torch.ops.mkldnn._reorder_linear_weight(w, 16)
            return w, tensor(b).to(self.dtype)

        self.word, self.position = tensor(base.word), tensor(base.position)
        self.type0 = tensor(base.type0)
        self.emb_ln = tuple(tensor(a) for a in base.emb_ln)
        # flat lists, four per layer, as rag.torch_forward.forward takes them
        weights, biases, norms = [], [], []
        for (qkv, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b) in base.layers:
            for w, b in ((qkv, qkv_b), (o_w, o_b), (i_w, i_b), (f_w, f_b)):
                w, b = linear(w, b)
                weights.append(w)
                biases.append(b)
            norms += [tensor(a) for a in (ln1_w, ln1_b, ln2_w, ln2_b)]
        # everything rag.torch_forward.forward takes after the token ids and their mask
        self.params = (self.word, self.position, self.type0, *self.emb_ln, weights, biases,
                       norms, self.heads, self.eps, self._packed, self.dtype)

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Float32 sentence vectors, one row per text (unit length when the model normalises),
        texts batched with others of like token counts so batches carry little padding."""
        out = _by_length(self.base.tokenizer, texts, self.dimension, batch_size,
                         self._forward, progress)
        if self.normalize:  # in float32: bfloat16 leaves the norm off by ~1e-3
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_with_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                          batch_size: int = 64, progress: Callable[[int], None] | None = None,
                          codes: bool = False) -> tuple:
        """`encode(texts)`, and from the same pass a unit vector for each (start, end) span
        of each text (its sentences): the mean of the last layer's states of the tokens that
        lie within the span, read in the context of the whole text. No second forward pass:
        SQuAD ingest embeds its 10,324 sentences for nothing beside its 3,711 chunks. A span
        no token lies in (cut off by the model's length limit) gets a zero row. With `codes`,
        a third list: each text's token codes (`token_codes`), from the same pass too."""
        encodings = self.base.tokenizer.encode_batch(list(texts)) if texts else []
        ids = [e.ids for e in encodings]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        parts = [np.zeros((len(s), self.dimension), dtype=np.float32) for s in spans]
        packed: list[np.ndarray] = [np.zeros((0, self.dimension // 8), np.uint8)] * len(texts)
        for rows in _batches_by_length(ids, batch_size):
            pooled, states = self._run([ids[i] for i in rows])
            out[rows] = pooled
            for j, i in enumerate(rows):
                parts[i] = _span_means(states[j], encodings[i], spans[i], parts[i])
                if codes:
                    packed[i] = token_codes(states[j][:len(ids[i])][late_tokens(encodings[i])])
            if progress:
                progress(len(rows))
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        for p in parts:
            p /= np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        return (out, parts, packed) if codes else (out, parts)

    def encode_question(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """`encode([text])[0]`, bit for bit, and from the same pass the unit last states of
        the tokens late interaction reads (`late_tokens`), one row each."""
        encoding = self.base.tokenizer.encode(text)
        pooled, states = self._run([encoding.ids])
        out = np.zeros((1, self.dimension), dtype=np.float32)
        out[0] = pooled[0]
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        kept = states[0][:len(encoding.ids)][late_tokens(encoding)].astype(np.float32)
        kept /= np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), 1e-12)
        return out[0], kept

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        return self._run(batch)[0]

    def _run(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from rag.torch_forward import compiled

        ids, mask = (torch.from_numpy(a) for a in _padded(batch))
        # op by op as written (no fusion): the same arithmetic whichever way it runs
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            pooled, states = compiled()(ids, mask.bool(), *self.params)
        return pooled.numpy(), states.numpy()


def late_tokens(encoding) -> np.ndarray:
    """Which tokens of `encoding` late interaction reads: the real ones (not [CLS], [SEP])
    that are not in LATE_SKIP."""
    special = np.asarray(encoding.special_tokens_mask, dtype=bool)
    return np.array([not sp and token not in LATE_SKIP
                     for token, sp in zip(encoding.tokens, special)], dtype=bool)


def token_codes(states: np.ndarray) -> np.ndarray:
    """Each token's state as the signs of its dimensions, packed eight to a byte (uint8,
    (tokens, dimension / 8)). On SQuAD the signs rank as well as the states in float16 (all
    even questions in fifths: recall@5 within 0.004) in a sixteenth of the bytes."""
    return np.packbits(np.asarray(states) > 0, axis=1)


def late_scores(question: np.ndarray, blocks: Sequence[np.ndarray], bf16: bool) -> np.ndarray:
    """For each block of a passage's token codes, the sum over the question's token states of
    their best inner product with one of the passage's tokens, read as 0/1 bits (the same
    order as signs: q.(2b - 1) = 2 q.b - sum(q), a constant per question token). Blocks must
    not be empty. In torch, on its own threads (numpy's product would start OpenBLAS's,
    which then spin on the cores the next question's embedding needs: rag.store.nearest);
    bfloat16 where the CPU has it (80 SQuAD passages, ~4,400 tokens: ~0.6 ms)."""
    import torch

    counts = np.array([len(b) for b in blocks], dtype=np.int64)
    bits = np.unpackbits(np.concatenate(list(blocks)), axis=1)
    dtype = torch.bfloat16 if bf16 else torch.float32
    product = (torch.from_numpy(np.ascontiguousarray(question)).to(dtype)
               @ torch.from_numpy(bits).to(dtype).T).float().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.maximum.reduceat(product, starts, axis=1).sum(0, dtype=np.float64)


def _span_means(states: np.ndarray, encoding, spans: Sequence[tuple[int, int]],
                out: np.ndarray) -> np.ndarray:
    """Into `out`, row by row: the mean of `states` (length, hidden) over the tokens of
    `encoding` whose characters lie within each span; special tokens ([CLS], [SEP]) belong to
    none."""
    offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
    real = (np.asarray(encoding.special_tokens_mask) == 0) & (offsets[:, 1] > offsets[:, 0])
    for k, (start, end) in enumerate(spans):
        inside = real & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
        if inside.any():
            out[k] = states[:len(offsets)][inside].mean(0)
    return out


def _mkldnn_bf16(torch) -> bool:
    """Whether oneDNN can pack and run bfloat16 products on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
    except (AttributeError, RuntimeError):
        return False
