"""The recurrent cells, one file each; importing this package registers them all by name."""

from minirec.cells.atr import ATR
from minirec.cells.base import Cell, RecurrentLayer, cell_names, get_cell, register
from minirec.cells.fofe import FOFE, fofe_closed_form, fofe_matrix
from minirec.cells.gru import GRU
from minirec.cells.lrn import ELRN, GLRN, LRN, OLRN, lrn_step_jacobian, lrn_unrolled
from minirec.cells.lstm import LSTM
from minirec.cells.mgu import MGU
from minirec.cells.mingru import MinGRU
from minirec.cells.minlstm import MinLSTM
from minirec.cells.qrnn import QRNN
from minirec.cells.sgu import SGU
from minirec.cells.sru import SRU, scaling_correction

__all__ = [
    "Cell", "RecurrentLayer", "cell_names", "get_cell", "register",
    "GRU", "LSTM", "MGU", "SGU", "FOFE", "fofe_closed_form", "fofe_matrix", "MinGRU", "MinLSTM",
    "ATR", "LRN", "GLRN", "ELRN", "OLRN", "lrn_step_jacobian", "lrn_unrolled",
    "SRU", "QRNN", "scaling_correction",
]
