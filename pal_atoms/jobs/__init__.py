"""The jobs behind the command line: ``md`` and ``ts`` runs, plots of a finished run.

Each job takes one config (set-up, the loop, the final check) and is called by
:mod:`pal_atoms.cli`.
"""
