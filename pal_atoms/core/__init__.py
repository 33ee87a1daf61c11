"""The bottom of the stack: errors, the kernels' contracts, the label, checks, compat.

Nothing here imports another part of pal-atoms; everything else may import it.
"""
