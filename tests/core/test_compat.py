"""The compatibility shims: mace imports quietly and leaves torch's safe loading on."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import os
from pal_atoms.core.compat import import_mace
import_mace()
print("FORCE", os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"))
"""


def test_mace_imports_without_its_notice_and_without_unsafe_loads():
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300, check=True
    )
    assert "cuequivariance" not in proc.stdout + proc.stderr
    assert "FORCE None" in proc.stdout  # mace's environment variable was taken back
