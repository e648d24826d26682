"""``python -m minirec …`` runs the ``minirec`` command (useful where the package is on the path
but not installed, e.g. the GPU machine: see benchmarks/gpu_session.sh)."""

import sys

from minirec.cli import main

sys.exit(main())
