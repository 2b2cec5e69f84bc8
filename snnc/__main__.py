"""``python -m snnc``: the snnc command line."""

from .cli import main

raise SystemExit(main())
