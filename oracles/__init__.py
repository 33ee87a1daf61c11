"""Oracles: reference methods (xTB, PySCF, Turbomole, any ASE calculator) with failure semantics."""
