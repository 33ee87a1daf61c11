"""The ``pal-atoms`` command: parse, build the job's config, call the job."""

from __future__ import annotations

from pal_atoms.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
