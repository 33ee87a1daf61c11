"""Oracles as ASE users expect them: a timeout alone isolates, a plain ASE calculator is
an oracle, and a calculator class defined in the user's own script works in the worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from pal_atoms.oracles import XTB, label

sys.path.insert(0, str(Path(__file__).parent))
import oracle_standins as s


def test_a_timeout_alone_runs_the_label_in_a_worker():
    water = molecule("H2O")
    assert label(water, XTB(), timeout_s=60).ok
    hung = label(water, s.oracle(s.Hang), timeout_s=1.0)  # only a worker can be killed
    assert hung.status.value == "timeout"


def test_a_plain_ase_calculator_is_an_oracle():
    lab = label(bulk("Cu", "fcc", a=3.6, cubic=True), EMT())
    assert lab.ok and lab.oracle == "emt" and lab.method == "EMT"
    assert lab.stress is not None  # periodic: the wrapped calculator's stress is kept


SCRIPT = """
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from pal_atoms.oracles import label


class ShiftedEMT(EMT):
    '''A calculator defined in the user's script (its class lives in __main__).'''

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["energy"] -= 1.0
        self.results["free_energy"] = self.results["energy"]

{body}
"""

GUARDED = """
if __name__ == "__main__":
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    lab = label(cell, ShiftedEMT(), timeout_s=60)
    ref = cell.copy(); ref.calc = EMT()
    print("STATUS", lab.status, lab.error.splitlines()[0] if lab.error else "")
    print("SHIFT", round(ref.get_potential_energy() - lab.energy, 9))
"""

UNGUARDED = """
lab = label(bulk("Cu", "fcc", a=3.6, cubic=True), ShiftedEMT(), timeout_s=60)
print("STATUS", lab.status, lab.error)
"""


def _run(tmp_path: Path, body: str) -> str:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT).format(body=textwrap.dedent(body)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_calculator_from_the_users_script_works_with_a_timeout(tmp_path):
    out = _run(tmp_path, GUARDED)
    assert "STATUS ok" in out, out
    assert "SHIFT 1.0" in out  # the user's class ran in the worker


def test_an_unguarded_script_gets_a_failed_label_that_says_what_to_do(tmp_path):
    out = _run(tmp_path, UNGUARDED)
    assert "STATUS failed" in out, out
    assert 'if __name__ == "__main__":' in out
