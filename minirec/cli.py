"""The `minirec` command: gradcheck | train | info.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args)`; this file
only routes the first word there.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

COMMANDS = {
    "gradcheck": ("minirec.checks", "finite-difference check of every op and cell"),
    "train": ("minirec.training", "train a model: ptb, sst, chars or classify"),
    "info": ("minirec.info", "versions, backends and kernels usable here"),
    "sample": ("minirec.training.sample", "generate text from a trained language model (chars or ptb)"),
}


def main(argv=None) -> int:
    process_exits = argv is None  # the command itself (not a call from Python): the process ends after it
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="minirec", description="Simplified recurrent networks, checked and fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(module_name)
        modules[name].add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    args.process_exits = process_exits
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
