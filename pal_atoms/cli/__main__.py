"""``python -m pal_atoms.cli``: the ``pal-atoms`` command (how ``--np`` starts its ranks)."""

from __future__ import annotations

import sys

from pal_atoms.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
