"""The ``snnc`` console script and ``python -m snnc``: :func:`snnc.cli.main`, with Ctrl-C during
start-up (importing torch takes seconds) ending as cleanly as Ctrl-C during a command."""

from __future__ import annotations

import sys


def run() -> int:
    """Import the command line and run it; exit status 130 on Ctrl-C, without a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("snnc: interrupted", file=sys.stderr)
        return 130
    return main()
