"""TorchMiniLM's forward pass as one function TorchScript compiles (rag.minilm imports this
module only once it runs the model: torch is too heavy for `rag --help`).

A question is ~15 tokens, so each of its 24 products is ~10 us of oneDNN work wrapped in
~30 us of dispatch; Python's own share of that, ~1 ms a question, goes when the whole pass runs
as one compiled graph. Measured on 200 SQuAD questions, two threads, bfloat16, one after
another: the forward 3.28 ms eagerly, 2.29 ms compiled, the vectors bit for bit the same (the
same operators in the same order; tests/test_minilm.py). Where TorchScript cannot compile it,
`compiled` hands back the plain function, which runs eagerly to the same result."""

# no `from __future__ import annotations`: TorchScript reads the annotations as types
import threading
import warnings

import torch  # noqa: TID253 - this module is imported only to run the model
import torch.nn.functional as F  # noqa: TID253


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool,
            packed: bool) -> torch.Tensor:
    if packed:
        # weights in oneDNN's blocked layout; the post-op "gelu" with algorithm "none" is the
        # exact (erf) GELU
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def forward(ids: torch.Tensor, mask: torch.Tensor, word: torch.Tensor, position: torch.Tensor,
            type0: torch.Tensor, emb_w: torch.Tensor, emb_b: torch.Tensor,
            weights: list[torch.Tensor], biases: list[torch.Tensor], norms: list[torch.Tensor],
            heads: int, eps: float, packed: bool, dtype: torch.dtype
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled BERT vectors (not normalised) of `ids` (n, length), `mask` (n, length) True
    on real tokens, and the last layer's token states they pool (n, length, hidden; zero on
    padding). Per layer: weights/biases [4l .. 4l+3] are the fused query-key-value
    projection, the attention output, the inner and the output feed-forward products; norms
    [4l .. 4l+3] the two layer norms' weight and bias. Products in `dtype`, layer norms,
    softmax and residual sums in float32, as under torch.autocast."""
    n, length = ids.shape[0], ids.shape[1]
    hidden = word.shape[1]
    h = word[ids] + position[:length] + type0
    h = F.layer_norm(h, [hidden], emb_w, emb_b, eps).reshape(n * length, hidden)
    attend: torch.Tensor | None = None
    if not bool(mask.all()):
        attend = mask[:, None, None, :]
    for layer in range(len(weights) // 4):
        at = 4 * layer
        y = _linear(h.to(dtype), weights[at], biases[at], False, packed)
        q, k, v = y.view(n, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4).unbind(0)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        ctx = ctx.transpose(1, 2).reshape(n * length, hidden)
        # float32 + bfloat16 promotes to float32: the sum of the two as float32, in one op
        x = F.layer_norm(h + _linear(ctx, weights[at + 1], biases[at + 1], False, packed),
                         [hidden], norms[at], norms[at + 1], eps)
        y = _linear(_linear(x.to(dtype), weights[at + 2], biases[at + 2], True, packed),
                    weights[at + 3], biases[at + 3], False, packed)
        h = F.layer_norm(x + y, [hidden], norms[at + 2], norms[at + 3], eps)
    h = h.view(n, length, hidden) * mask[:, :, None]
    return h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1), h


_compiled = None
_lock = threading.Lock()


def compiled():
    """`forward` compiled once per process (~0.1 s), or `forward` itself where it cannot be."""
    global _compiled
    if _compiled is not None:  # every forward asks: no lock once it is there
        return _compiled
    with _lock:
        if _compiled is None:
            try:
                # torch 2.13 (pinned) deprecates TorchScript for torch.compile, which needs a
                # C++ compiler at run time and seconds to compile; if a later torch drops it,
                # the eager pass below computes the same vectors
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    _compiled = torch.jit.script(forward)
            except Exception:  # noqa: BLE001 - any failure leaves the eager pass, same result
                _compiled = forward
        return _compiled
