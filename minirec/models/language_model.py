"""A word-level recurrent language model (Zaremba et al. 2014, "Recurrent Neural Network
Regularization"), with any registered cell.

    tokens (T, B) ─► Embedding ─► dropout ─► nn.RNN(cell, L layers, dropout between) ─► dropout
                  ─► decoder: logits = h W + b  (T, B, V)

The whole window goes through the decoder as one (T·B, H) @ (H, V) product: no per-token
Python work. With ``tie_weights`` the decoder reuses the embedding table E (V, E): logits =
h Eᵀ + b (Press & Wolf 2017; Inan et al. 2017), which needs the RNN's output size to equal the
embedding size.

Truncated back-propagation through time: the state returned by `forward` continues the next
window of the same streams; `detach_state` cuts it from the graph first, so each backward stops
at the window's start.
"""

from __future__ import annotations

import numpy as np

from minirec import backend
from minirec.autograd.function import Function, Tensor
from minirec.nn import RNN, Dropout, Embedding, Linear, Module, Parameter

__all__ = ["LanguageModel", "DecoderCrossEntropy", "decoder_cross_entropy", "detach_state", "reinit_uniform",
           "to_model_device"]


_ROW_BLOCK = 16  # rows per block: 16 × 10,000 float32 = 640 KB, at home in a core's L2 cache


def softmax_stats_(z):
    """Overwrite z (N, V) with exp(z − max) row-wise; return (max, sum) per row, each (N,).

    On the CPU the rows go a block at a time, so that a block stays in cache for its four passes
    (max, subtract, exp, sum) instead of streaming the whole (N, V) array from memory four times.
    (Splitting the rows over threads measured no faster: OpenBLAS's threads, still spinning after
    the GEMM before, hold the other core.) On the GPU: whole-array kernels, few launches.
    """
    xp = backend.get_xp(z)
    n = z.shape[0]
    m, s = xp.empty(n, dtype=z.dtype), xp.empty(n, dtype=z.dtype)
    rows_per_block = _ROW_BLOCK if xp is np else max(n, 1)
    for a in range(0, n, rows_per_block):
        b = min(a + rows_per_block, n)
        block = z[a:b]
        m[a:b] = block.max(axis=1)
        block -= m[a:b, None]
        xp.exp(block, out=block)
        s[a:b] = block.sum(axis=1)
    return m, s


class DecoderCrossEntropy(Function):
    """The decoder and the loss in one Function: mean_i −log softmax(h_i W + b)[y_i].

    Same value and gradient as ``ops.cross_entropy(h @ W + b, y)``, in fewer passes over the
    (N, V) logits, which dominate a language model's step (V = 10,000 for PTB):

    forward:  z = hW + b (one GEMM, bias added in place), m = max_j z, e = exp(z − m) in place,
              s = Σ_j e, loss = mean_i (log s_i + m_i − z_{i,y_i});
    backward: G = (e / s − onehot(y)) · ḡ / N (the softmax minus the one-hot),
              ∂h = G Wᵀ, ∂W = hᵀ G, ∂b = Σ_i G_i.

    ``transposed``: W is given as (V, H), the embedding table (tied weights): z = h Wᵀ + b and
    ∂W = Gᵀ h.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, transposed=False):
        xp = backend.get_xp(h, weight, bias, targets)
        n = h.shape[0]
        if h.ndim != 2 or targets.shape != (n,):
            raise ValueError(f"decoder_cross_entropy: h must be (N, H) and targets (N,), got "
                             f"{tuple(h.shape)} and {tuple(targets.shape)}")
        vocab_size = weight.shape[0 if transposed else 1]
        if targets.dtype.kind not in "iu":
            raise TypeError(f"decoder_cross_entropy: targets must be integer ids, got dtype {targets.dtype}")
        # Checked here, not left to indexing: a negative id would silently pick a word from the end.
        if n and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
            raise IndexError(f"decoder_cross_entropy: a target is outside [0, {vocab_size}) "
                             f"(min {int(targets.min())}, max {int(targets.max())})")
        z = h @ (weight.T if transposed else weight)
        if bias is not None:
            z += bias
        rows = xp.arange(n)
        picked = z[rows, targets]  # a copy (advanced indexing), taken before z is overwritten
        m, s = softmax_stats_(z)
        e = z
        losses = xp.log(s) + m - picked
        ctx.save_for_backward(h, weight, e, s, targets)
        ctx.transposed, ctx.has_bias = transposed, bias is not None
        return losses.sum(dtype=xp.float64).astype(h.dtype) / h.dtype.type(max(n, 1))

    @staticmethod
    def backward(ctx, grad):
        h, weight, e, s, targets = ctx.saved_arrays
        xp = backend.get_xp(h)
        n = h.shape[0]
        scale = grad / h.dtype.type(max(n, 1))
        if ctx.retains_graph:
            g = e * (scale / s)[:, None]  # a new array: e must stay intact for a second backward
        else:
            g = e  # e is freed after this backward: reuse its (N, V) buffer, one pass less
            g *= (scale / s)[:, None]
        g[xp.arange(n), targets] -= scale
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = g @ (weight if ctx.transposed else weight.T)
        if ctx.needs_input_grad[1]:
            grad_w = g.T @ h if ctx.transposed else h.T @ g
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=0)
        return grad_h, grad_w, grad_b, None


def decoder_cross_entropy(h, weight, bias, targets, transposed: bool = False) -> Tensor:
    """Mean cross-entropy of ``targets`` (N,) under softmax(h W + b), h (N, H): see
    `DecoderCrossEntropy`. ``bias`` may be None."""
    targets = targets.data if isinstance(targets, Tensor) else targets
    return DecoderCrossEntropy.apply(h, weight, bias, targets, transposed=transposed)


def detach_state(state):
    """The same state cut from the graph: Tensors detached inside lists and tuples (LSTM's (h, c))."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if isinstance(state, tuple):
        return tuple(detach_state(s) for s in state)
    raise TypeError(f"cannot detach a state of type {type(state).__name__}")


def reinit_uniform(module: Module, init_range: float) -> None:
    """Draw every parameter of ``module`` from U(−init_range, init_range) (Zaremba's init: all
    weights and biases alike), with minirec's seeded generator, keeping device and dtype."""
    if init_range <= 0:
        raise ValueError(f"init_range must be > 0, got {init_range}")
    for _, p in module.named_parameters():
        values = backend.rng().uniform(-init_range, init_range, size=p.shape).astype(p.dtype)
        p.data = backend.get_xp(p.data).asarray(values)


def to_model_device(array, module: Module):
    """Integer ids (NumPy, CuPy or a Tensor) as an array on the device of ``module``'s parameters."""
    if isinstance(array, Tensor):
        array = array.data
    return backend.to_device(array, module.device)


class LanguageModel(Module):
    """Embedding → dropout → RNN stack → dropout → linear decoder to the vocabulary.

    ``forward(tokens, state=None) -> (logits, new_state)``: tokens (T, B) integer ids, logits
    (T, B, vocab_size), state a list with one entry per layer in the cell's state format.
    ``init_range`` (e.g. 0.1 for Zaremba's small model) re-draws *every* parameter from
    U(±init_range) after construction; None keeps each layer's own init (the cell's paper
    init, Linear's U(±1/√in), the embedding's U(±0.1)).
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embedding_size: int = 200,
        hidden_size: int = 200,
        num_layers: int = 2,
        dropout: float = 0.0,
        tie_weights: bool = False,
        init_range: float | None = None,
        **cell_options,
    ):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.embedding = Embedding(vocab_size, embedding_size)
        self.input_dropout = Dropout(dropout)
        self.rnn = RNN(cell, embedding_size, hidden_size, num_layers=num_layers,
                       dropout=dropout if num_layers > 1 else 0.0, **cell_options)  # (between layers)
        self.output_dropout = Dropout(dropout)
        self.tie_weights = bool(tie_weights)
        output_size = self.rnn.output_size
        if self.tie_weights:
            if output_size != embedding_size:
                raise ValueError(
                    f"tie_weights needs the RNN's output size to equal the embedding size: the decoder "
                    f"reuses the (vocab, embedding) table, but the RNN outputs {output_size} features "
                    f"(hidden_size={hidden_size}) and embedding_size={embedding_size}"
                )
            self.decoder = None
            self.decoder_bias = Parameter(np.zeros(vocab_size, dtype=backend.get_default_dtype()))
        else:
            self.decoder = Linear(output_size, vocab_size)
        if init_range is not None:
            reinit_uniform(self, init_range)

    @property
    def cell(self) -> str:
        return self.rnn.cell

    def decode(self, h: Tensor) -> Tensor:
        """Logits for features h (..., H): one matrix product for all leading positions."""
        lead = h.shape[:-1]
        flat = h.reshape(-1, h.shape[-1])  # (T·B, H) @ (H, V): one GEMM, and one for each gradient
        if self.tie_weights:
            logits = flat @ self.embedding.weight.T + self.decoder_bias
        else:
            logits = self.decoder(flat)
        return logits.reshape(*lead, self.vocab_size)

    def features(self, tokens, state=None):
        """(the decoder's input (T, B, H), after the output dropout; the new state)."""
        tokens = to_model_device(tokens, self)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be time-major (T, B) ids, got shape {tuple(tokens.shape)}")
        x = self.input_dropout(self.embedding(tokens))
        h, new_state = self.rnn(x, state)
        return self.output_dropout(h), new_state

    def forward(self, tokens, state=None):
        h, new_state = self.features(tokens, state)
        return self.decode(h), new_state

    def loss(self, tokens, targets, state=None):
        """(mean cross-entropy of the next words, new state) for one window: the training step.

        ``targets`` (T, B) are the ids that follow ``tokens``. Equal to
        ``ops.cross_entropy(logits, targets)`` on `forward`'s logits, but the decoder and the
        loss are fused (`DecoderCrossEntropy`): the (T·B, V) logits are made and read fewer times.
        """
        targets = to_model_device(targets, self)
        if targets.shape != tuple(np.shape(tokens)):
            raise ValueError(f"targets must have the shape of tokens (T, B), got {tuple(targets.shape)} "
                             f"and {tuple(np.shape(tokens))}")
        h, new_state = self.features(tokens, state)
        flat = h.reshape(-1, h.shape[-1])
        if self.tie_weights:
            loss = decoder_cross_entropy(flat, self.embedding.weight, self.decoder_bias, targets.reshape(-1), True)
        else:
            loss = decoder_cross_entropy(flat, self.decoder.weight, self.decoder.bias, targets.reshape(-1))
        return loss, new_state

    detach_state = staticmethod(detach_state)

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}, tie_weights={self.tie_weights}"
