"""The `minirec` command: gradcheck | train | info.

Each subcommand lives in its own module; this file only parses the first word.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="minirec", description="Simplified recurrent networks, checked and fast.")
    sub = parser.add_subparsers(dest="command", required=True)

    from minirec import checks, info, training

    checks.add_arguments(sub.add_parser("gradcheck", help="finite-difference check of every op and cell"))
    training.add_arguments(sub.add_parser("train", help="train a model on PTB or SST"))
    info.add_arguments(sub.add_parser("info", help="versions, backends and kernels usable here"))
    args = parser.parse_args(argv)
    handlers = {"gradcheck": checks.run, "train": training.run, "info": info.run}
    return int(handlers[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
