"""Neural-network building blocks on top of the autograd engine."""

from minirec.nn.layers import Dropout, Embedding, LayerNorm, Linear, WordDropout, uniform_parameter
from minirec.nn.module import Module, ModuleList, Parameter, StateDictError, save_npz_atomic
from minirec.nn.optim import SGD, Adam, clip_grad_norm
from minirec.nn.rnn import RNN

__all__ = [
    "Module", "ModuleList", "Parameter", "StateDictError", "save_npz_atomic",
    "Linear", "Embedding", "Dropout", "WordDropout", "LayerNorm", "uniform_parameter",
    "SGD", "Adam", "clip_grad_norm", "RNN",
]
