"""MPI execution of the active-learning workflow (mpi4py): layout, messages, rank loops.

Nothing here imports mpi4py at import time of :mod:`pal_atoms`; it is imported when a run
actually uses MPI.
"""
