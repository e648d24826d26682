"""A minirec `LanguageModel` exported as a PyTorch module with the same perplexity.

    torch_model = to_torch(language_model)       # TorchLanguageModel
    logits, state = torch_model(tokens)          # tokens (T, B) int64, time-major like minirec

Layers map one to one: Embedding (V, E) → ``torch.nn.Embedding``; the RNN → ``torch.nn.LSTM`` /
``GRU`` (`minirec.interop.torch_rnn`); the decoder (H, V) matrix → ``torch.nn.Linear`` (stored
transposed), or, with tied weights, the embedding table reused. Dropout keeps its rates (the
masks are PyTorch's own draws).
"""

from __future__ import annotations

import torch

from minirec.interop._common import ConversionError, to_torch_tensor
from minirec.interop.torch_rnn import rnn_to_torch

__all__ = ["TorchLanguageModel", "language_model_to_torch"]


class TorchLanguageModel(torch.nn.Module):
    """Embedding → dropout → LSTM/GRU stack → dropout → decoder; time-major (T, B) tokens."""

    def __init__(self, embedding, rnn, decoder, dropout: float, tie_weights: bool):
        super().__init__()
        self.embedding, self.rnn, self.decoder = embedding, rnn, decoder
        self.dropout = torch.nn.Dropout(dropout)
        self.tie_weights = tie_weights
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens, state=None):
        h, state = self.rnn(self.dropout(self.embedding(tokens)), state)
        return self.decoder(self.dropout(h)), state


def language_model_to_torch(model) -> TorchLanguageModel:
    """A `TorchLanguageModel` computing what the minirec `LanguageModel` computes (weights copied)."""
    if type(model.embedding.weight.data).__module__.split(".")[0] != "numpy":
        raise ConversionError("move the model to the CPU first (model.to('cpu')): conversion reads NumPy arrays")
    table = model.embedding.weight.data
    V, E = table.shape
    dtype = {"float32": torch.float32, "float64": torch.float64}[str(table.dtype)]
    embedding = torch.nn.Embedding(V, E).to(dtype)
    rnn = rnn_to_torch(model.rnn)
    out = model.rnn.output_size
    decoder = torch.nn.Linear(out, V).to(dtype)
    with torch.no_grad():
        embedding.weight.copy_(to_torch_tensor(table, like=embedding.weight))
        if model.tie_weights:
            decoder.bias.copy_(to_torch_tensor(model.decoder_bias.data, like=decoder.bias))
        else:
            decoder.weight.copy_(to_torch_tensor(model.decoder.weight.data.T, like=decoder.weight))
            decoder.bias.copy_(to_torch_tensor(model.decoder.bias.data, like=decoder.bias))
    return TorchLanguageModel(embedding, rnn, decoder, model.input_dropout.p, model.tie_weights)
