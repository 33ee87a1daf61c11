"""Stand-in ASE calculators for failure-handling tests (module level, so workers unpickle them).

Each misbehaves in one way: hangs, raises, exits the process, segfaults, eats memory,
returns NaN, or fails to converge. Real physics is tested with the real codes elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
from ase.calculators.calculator import Calculator, SCFError, all_changes
from pal_atoms.oracles import Wrapped


class _Base(Calculator):
    implemented_properties = ("energy", "free_energy", "forces")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.misbehave()
        n = len(self.atoms)
        self.results = {"energy": -1.0, "free_energy": -1.0, "forces": np.zeros((n, 3))}

    def misbehave(self) -> None:
        pass


class Fine(_Base):
    pass


class Hang(_Base):
    def misbehave(self) -> None:
        time.sleep(3600)


class Raise(_Base):
    def misbehave(self) -> None:
        raise RuntimeError("integral screening blew up")


class Exit(_Base):
    def misbehave(self) -> None:
        os._exit(3)


class SysExit(_Base):
    def misbehave(self) -> None:
        raise SystemExit(4)


class Segfault(_Base):
    def misbehave(self) -> None:
        ctypes.string_at(0)


class EatMemory(_Base):
    def misbehave(self) -> None:
        self.hog = np.ones((64, 1024, 1024, 16))  # 8 GiB


class NaN(_Base):
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        self.results = {"energy": float("nan"), "forces": np.zeros((len(self.atoms), 3))}


class SCFFail(_Base):
    def misbehave(self) -> None:
        raise SCFError("SCF did not reach the threshold")


class SaysUnconverged(_Base):
    def misbehave(self) -> None:
        raise RuntimeError("SCF not converged in 5 cycles")


class ConvergesWithShift(_Base):
    """Unconverged unless ``shift`` >= 1 (for custom retry policies)."""

    def __init__(self, shift: float = 0.0):
        super().__init__()
        self.shift = shift

    def misbehave(self) -> None:
        if self.shift < 1.0:
            raise SCFError(f"not converged with shift {self.shift}")


def oracle(cls: type, **kwargs) -> Wrapped:
    """A wrapped stand-in built in the worker from its class (a picklable factory)."""
    return Wrapped(factory=cls, name=cls.__name__.lower(), method="stand-in", **kwargs)


def adjust_shift(oracle_: Wrapped, attempt: int) -> Wrapped:
    """Custom retry adjustment: a ConvergesWithShift with a larger shift."""
    return Wrapped(
        ConvergesWithShift(shift=0.5 * attempt),
        name="shifted",
        method="stand-in",
        parameters={"shift": 0.5 * attempt},
    )
