"""``python -m snnc``: the snnc command line."""

from .entry import run

raise SystemExit(run())
