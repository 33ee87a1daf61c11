"""Exception hierarchy of pal-atoms.

Every error raised on purpose by pal-atoms derives from :class:`PalAtomsError`, so callers
can catch the whole family at once. Errors caused by bad user input also derive from
:class:`ValueError` (what Python users expect for bad arguments); the command line maps
:class:`InputError` to exit code 2 and every other :class:`PalAtomsError` to exit code 1.

Hierarchy::

    PalAtomsError
    ├── InputError (ValueError)        bad argument, file, structure or configuration
    │   ├── ConfigError                invalid or unknown setting
    │   │   ├── LayoutError            MPI rank layout does not fit the communicator
    │   │   └── LaunchError            processes started in a way that cannot work
    │   │                              (siblings without an MPI connection)
    │   └── StructureError             a structure no kernel can use (NaN, overlap, ...)
    ├── StoreError                     label store could not be read or written
    │   └── StoreFormatError (InputError)  file is not a label store, or it is damaged
    ├── OracleError                    the reference method could not deliver a label
    │   └── OracleSetupError (InputError)  oracle cannot run here (missing program, ...)
    ├── ModelError                     committee could not be built, loaded or trained
    └── WorkflowError                  the active-learning run had to stop
        └── FailureBudgetExceeded      too many oracle failures in the recent window
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FailureBudgetExceeded",
    "InputError",
    "LaunchError",
    "LayoutError",
    "ModelError",
    "OracleError",
    "OracleSetupError",
    "PalAtomsError",
    "StoreError",
    "StoreFormatError",
    "StructureError",
    "WorkflowError",
]


class PalAtomsError(Exception):
    """Base class of every error pal-atoms raises on purpose."""


class InputError(PalAtomsError, ValueError):
    """Raised when user input (argument, file, structure, setting) cannot be used."""


class ConfigError(InputError):
    """Raised for an invalid value or an unknown key in a settings object or TOML file."""


class LayoutError(ConfigError):
    """Raised when the requested MPI rank layout does not fit the communicator size."""


class LaunchError(ConfigError):
    """Raised when the run's processes were started in a way that cannot work.

    For example ``srun --mpi=none -n 3``: three copies that share no communicator and
    would each run the whole job against one run directory.
    """


class StructureError(InputError):
    """Raised for a structure that no kernel should see (empty, NaN, overlapping atoms)."""


class StoreError(PalAtomsError):
    """Raised when the label store cannot be read or written."""


class StoreFormatError(StoreError, InputError):
    """Raised when a file is not a pal-atoms label store, or is damaged."""


class OracleError(PalAtomsError):
    """Raised when a reference calculation could not deliver a label."""


class OracleSetupError(OracleError, InputError):
    """Raised when an oracle cannot run at all here (missing program, unsupported element)."""


class ModelError(PalAtomsError):
    """Raised when a committee cannot be built, loaded or trained."""


class WorkflowError(PalAtomsError):
    """Raised when an active-learning run has to stop."""


class FailureBudgetExceeded(WorkflowError):
    """Raised when the fraction of failed labels over the recent window exceeds the budget."""
