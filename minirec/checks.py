"""`minirec gradcheck`: finite-difference checks of every primitive op and every cell × option.

Each case builds small float64 inputs, runs `minirec.gradcheck` (central differences against
the hand-written backward) and reports the worst relative error. The op table is the one
tests/test_autograd.py asserts on; the cell tests run their own gradchecks of the same cells and
options. A user can see for themselves that every backward is right.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import minirec as mr
from minirec import backend

__all__ = ["CellCase", "cell_cases", "op_cases", "check_cell", "check_op", "run", "add_arguments"]

RTOL = 1e-6


# ---- primitive ops ---------------------------------------------------------------------------
def op_cases():
    """(name, fn, input shapes, positive inputs?) for every primitive op."""
    return [
        ("add (broadcast)", lambda a, b: a + b, [(3, 1, 4), (2, 1)], False),
        ("sub (broadcast)", lambda a, b: a - b, [(3, 4), (4,)], False),
        ("mul (broadcast)", lambda a, b: a * b, [(2, 3, 1), (1, 4)], False),
        ("div", lambda a, b: a / b, [(3, 4), (3, 1)], True),
        ("neg", lambda a: -a, [(3,)], False),
        ("pow scalar", lambda a: a**3.0, [(2, 3)], False),
        ("pow tensor", lambda a, b: a**b, [(2, 3), (3,)], True),
        ("matmul", lambda a, b: a @ b, [(3, 4), (4, 2)], False),
        ("matmul batched", lambda a, b: a @ b, [(2, 3, 4), (4, 5)], False),
        ("matmul vector", lambda a, b: a @ b, [(4,), (2, 4, 3)], False),
        ("exp", mr.exp, [(2, 3)], False),
        ("log", mr.log, [(2, 3)], True),
        ("tanh", mr.tanh, [(2, 3)], False),
        ("sigmoid", mr.sigmoid, [(2, 3)], False),
        ("relu", mr.relu, [(2, 3)], False),
        ("softplus", mr.softplus, [(2, 3)], False),
        ("sum axis", lambda a: a.sum(axis=1), [(2, 3, 4)], False),
        ("mean keepdims", lambda a: a.mean(axis=(0, 2), keepdims=True), [(2, 3, 4)], False),
        ("max axis", lambda a: a.max(axis=-1), [(3, 5)], False),
        ("reshape", lambda a: a.reshape(6, 2), [(3, 4)], False),
        ("transpose", lambda a: a.transpose(2, 0, 1), [(2, 3, 4)], False),
        ("slice", lambda a: a[1:, ::2], [(3, 5)], False),
        ("fancy index", lambda a: a[np.array([0, 2, 0])], [(3, 2)], False),
        ("concat", lambda a, b: mr.concat([a, b], axis=1), [(2, 3), (2, 1)], False),
        ("stack", lambda a, b: mr.stack([a, b], axis=1), [(2, 3), (2, 3)], False),
        ("where", lambda a, b: mr.where(a.data > 0, a, b), [(3, 4), (4,)], False),
        ("gather", lambda a: mr.gather(a, np.array([[1, 0], [1, 3]])), [(4, 3)], False),
        ("log_softmax", lambda a: mr.log_softmax(a, axis=-1), [(3, 5)], False),
        (
            "cross_entropy",
            lambda a: mr.cross_entropy(a, np.array([[1, 0], [4, 2]]), mask=np.array([[1, 1], [0, 1]])),
            [(2, 2, 5)],
            False,
        ),
        ("layer_norm", lambda a: mr.nn.LayerNorm(4, dtype=np.float64)(a), [(3, 4)], False),
    ]


def check_op(name, fn, shapes, positive, seed=0):
    rng = np.random.default_rng(seed)
    inputs = []
    for shape in shapes:
        data = rng.uniform(0.5, 2.0, shape) if positive else rng.standard_normal(shape)
        inputs.append(mr.tensor(data, requires_grad=True))
    return mr.gradcheck(fn, inputs, raise_on_failure=False)


# ---- cells -----------------------------------------------------------------------------------
@dataclass
class CellCase:
    cell: str
    option: str
    options: dict = field(default_factory=dict)
    bidirectional: bool = False
    h0: bool = False
    mask: bool = False
    input_size: int = 3
    hidden_size: int = 4


# Per-cell options worth checking besides the common ones (h0, mask, bidirectional).
CELL_OPTIONS = {
    "gru": [("reset_after", {"reset_after": True})],
    "lstm": [("forget_bias=0", {"forget_bias": 0.0})],
    "fofe": [("alpha=0.5", {"alpha": 0.5})],
    "sru": [
        ("highway_bias=-1", {"highway_bias": -1.0}),
        ("no rescale", {"rescale": False}),
        ("layer_norm", {"layer_norm": True}),
    ],
    "qrnn": [("highway", {"highway": True})],
    "lrn": [("identity", {"activation": "identity"})],
    "glrn": [("identity", {"activation": "identity"})],
    "elrn": [("identity", {"activation": "identity"})],
    **{
        name: [("sequential", {"mode": "sequential"}), ("g(x)", {"g_activation": True}), ("log", {"mode": "log"})]
        for name in ("mingru", "minlstm")
    },
}
# Cells whose hidden size must equal the input size.
SQUARE_CELLS = {"fofe"}
# Cells with a projected skip connection when sizes differ: check both.
PROJECTED_SKIP = {"sru": {}, "qrnn": {"highway": True}}


def cell_cases(names=None):
    from minirec.cells import cell_names, get_cell

    cases = []
    for name in names or cell_names():
        name = get_cell(name).name  # the tables below use the registered (lower-case) names
        size = 4 if name in SQUARE_CELLS else 3
        common = dict(input_size=size, hidden_size=4)
        if name in PROJECTED_SKIP:
            common["input_size"] = 4  # equal sizes: identity skip; the projected one is its own case
            cases.append(CellCase(name, "projected skip", dict(PROJECTED_SKIP[name]), input_size=3, hidden_size=4))
        cases += [
            CellCase(name, "plain", **common),
            CellCase(name, "h0", h0=True, **common),
            CellCase(name, "mask", mask=True, h0=True, **common),
            CellCase(name, "bidirectional+mask", bidirectional=True, mask=True, **common),
        ]
        for label, options in CELL_OPTIONS.get(name, []):
            cases.append(CellCase(name, label, options, h0=True, mask=True, **common))
    return cases


def _random_state(template, rng, positive):
    """A random h0 in the same structure as ``template`` (Tensor or tuple of Tensors)."""
    def one(t):
        data = rng.uniform(0.2, 1.0, t.shape) if positive else rng.standard_normal(t.shape) * 0.5
        return mr.tensor(data, requires_grad=True)

    return tuple(one(t) for t in template) if isinstance(template, tuple) else one(template)


def check_cell(case: CellCase, T: int = 4, B: int = 3, seed: int = 0):
    """Gradcheck one cell layer: x, h0 (if any) and every parameter, in float64."""
    from minirec.cells.base import RecurrentLayer

    previous = backend.get_default_dtype()
    backend.set_default_dtype(np.float64)
    try:
        backend.manual_seed(seed)
        layer = RecurrentLayer(case.cell, case.input_size, case.hidden_size, case.bidirectional, **case.options)
    finally:
        backend.set_default_dtype(previous)
    layer.train(False)
    rng = np.random.default_rng(seed)
    x = mr.tensor(rng.standard_normal((T, B, case.input_size)), requires_grad=True)
    mask = None
    if case.mask:
        lengths = [T, max(T - 2, 1), 1][:B] + [T] * max(B - 3, 0)
        mask = np.arange(T)[:, None] < np.array(lengths)[None, :]
    positive = case.options.get("mode") == "log"  # log-space minGRU/minLSTM need h0 > 0
    h0 = None
    if case.h0:
        template = layer.forward_cell.init_state(B, np, np.float64)
        if case.bidirectional:
            template = (
                tuple(mr.tensor(np.stack([t.data, t.data])) for t in template)
                if isinstance(template, tuple)
                else mr.tensor(np.stack([template.data, template.data]))
            )
        h0 = _random_state(template, rng, positive)
    h0_list = [] if h0 is None else list(h0) if isinstance(h0, tuple) else [h0]
    params = layer.parameters()
    inputs = [x, *h0_list, *params]

    def fn(x, *rest):
        state = None
        if h0 is not None:
            state = tuple(rest[: len(h0_list)]) if isinstance(h0, tuple) else rest[0]
        y, last = layer(x, state, mask)
        return (y, *last) if isinstance(last, tuple) else (y, last)

    return mr.gradcheck(fn, inputs, raise_on_failure=False)


# ---- the command -----------------------------------------------------------------------------
def _tolerance(text: str) -> float:
    """A relative error bound: a finite number > 0 (0 or less fails every case, NaN passes none)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_arguments(parser):
    parser.add_argument("--cells", nargs="*", help="only these cells (default: all registered)")
    parser.add_argument("--no-ops", action="store_true", help="skip the primitive ops")
    parser.add_argument("--tolerance", type=_tolerance, default=RTOL, help="largest relative error that passes")


def run(args) -> int:
    rows = []
    started = time.perf_counter()
    try:  # before any work: an unknown cell name is an error listing the known ones
        cases = cell_cases(args.cells)
    except ValueError as error:
        print(f"minirec gradcheck: error: {error}", file=sys.stderr)
        return 2
    if not args.no_ops:
        for name, fn, shapes, positive in op_cases():
            rows.append(("op", name, check_op(name, fn, shapes, positive)))
    for case in cases:
        rows.append((case.cell, case.option, check_cell(case)))
    width = max(len(r[1]) for r in rows) if rows else 10
    print(f"{'cell':<9} {'option':<{width}}  {'worst rel. error':>16}  pass")
    failures = 0
    for cell, option, result in rows:
        ok = (result.max_rel_error < args.tolerance or result.max_abs_error < result.atol) and all(
            r.entry_outside is None for r in result.inputs)
        failures += not ok
        print(f"{cell:<9} {option:<{width}}  {result.max_rel_error:>16.2e}  {'yes' if ok else 'NO'}")
    elapsed = time.perf_counter() - started
    print(f"gradcheck: {len(rows) - failures} of {len(rows)} cases within tolerance {args.tolerance:g} "
          f"(float64, {elapsed:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
