"""pal-atoms: parallel active learning of machine-learned interatomic potentials on ASE."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("pal-atoms")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

# In a source checkout (pytest or ``python -c`` started in the repository root) this folder
# shadows the installed package, but the kernel packages live beside it, not inside it
# (pyproject maps them with package-dir). Let them be found there too.
_here = Path(__file__).parent
if (
    not (_here / "calculators").is_dir()
    and (_here.parent / "calculators" / "__init__.py").is_file()
):
    __path__.append(str(_here.parent))
