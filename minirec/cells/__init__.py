"""The recurrent cells, one file each; importing this package registers them all by name."""

from minirec.cells.base import Cell, RecurrentLayer, cell_names, get_cell, register
from minirec.cells.fofe import FOFE, fofe_closed_form, fofe_matrix

__all__ = ["Cell", "RecurrentLayer", "cell_names", "get_cell", "register", "FOFE", "fofe_closed_form", "fofe_matrix"]
