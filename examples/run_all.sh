#!/usr/bin/env bash
# Run every example with short settings (what CI runs); well under 5 minutes on 2 cores.
#   usage: bash examples/run_all.sh [OUTDIR]      (default: a temporary folder, removed)
#   PY=...             interpreter (default: .venv/bin/python of this repository)
#   PAL_EXAMPLES_MPI=1 also run python_loop.py on 5 MPI ranks (mpiexec from the venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PY:-$root/.venv/bin/python}"
export OMP_NUM_THREADS=1 PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
if [ $# -ge 1 ]; then
    out="$1"
    mkdir -p "$out"
else
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi

run() {  # run NAME CMD...: time one example, fail the script if it fails
    local name="$1" t0=$SECONDS
    shift
    echo "=== $name"
    "$@"
    echo "=== $name: ok in $((SECONDS - t0)) s"
}

for f in examples/slurm/*.sbatch; do bash -n "$f"; done
echo "=== sbatch scripts parse"
run drop_in_md "$PY" examples/drop_in_md.py --quick --save "$out/committee"
run drop_in_md_saved "$PY" examples/drop_in_md.py --quick --committee "$out/committee"
run on_the_fly_md "$PY" examples/on_the_fly_md.py --quick --store "$out/otf-labels.h5"
run python_loop "$PY" examples/python_loop.py --quick --out "$out/python-loop"
run python_loop_continuous "$PY" examples/python_loop.py --quick --continuous \
    --out "$out/python-loop-continuous"
run build_hat_glycine "$PY" examples/build_hat_glycine.py --out "$out/hat_glycine.xyz"
run reaction_glycine "$(dirname "$PY")/pal-atoms" reaction --system examples/hat_glycine.xyz \
    --out "$out/reaction" --np 1 --committee 2 --steps 100 --time-limit 120 \
    --final-check-ps 0 --path-images 5 --path-steps 30
if "$PY" -c "import pyscf" 2>/dev/null; then
    run dft_pyscf_bi "$PY" examples/dft_pyscf_bi.py --quick --store "$out/bi-dft.h5"
else
    echo "=== dft_pyscf_bi: skipped (PySCF not installed: pip install 'pal-atoms[dft]')"
fi
if [ "${PAL_EXAMPLES_MPI:-0}" = 1 ]; then
    run python_loop_mpi "$(dirname "$PY")/mpiexec" -n 5 "$PY" -m mpi4py \
        examples/python_loop.py --quick --mpi --out "$out/python-loop-mpi"
fi
echo "all examples passed in $SECONDS s"
