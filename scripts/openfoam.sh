#!/usr/bin/env bash
# OpenFOAM for the thermo-fluid surrogate (pal_atoms.generic.channel, examples/thermofluid).
# Not needed for anything atomistic; guarded, so it never touches a machine that has it.
#
#   bash scripts/openfoam.sh          install Debian's openfoam (ESI v1912; root) if
#                                     blockMesh/simpleFoam are missing, then check a run
#   bash scripts/openfoam.sh check    exit 0 when the utilities run here
#
# foamlib (which writes the cases) comes with the `cfd` extra, part of `all`.
set -euo pipefail

have() { command -v blockMesh >/dev/null && command -v simpleFoam >/dev/null; }

check() {
    have || { echo "openfoam: blockMesh/simpleFoam not on PATH" >&2; return 1; }
    # Debian's package keeps its etc/ under /usr/share/openfoam; the utilities need it.
    WM_PROJECT_DIR="${WM_PROJECT_DIR:-/usr/share/openfoam}" simpleFoam -help >/dev/null 2>&1 \
        || { echo "openfoam: simpleFoam does not start" >&2; return 1; }
    echo "openfoam: ok ($(command -v simpleFoam))"
}

case "${1:-up}" in
    up)
        if ! have; then
            if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
                echo "openfoam: missing; install it as root with apt-get install openfoam" >&2
                exit 1
            fi
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openfoam >/dev/null
        fi
        check
        ;;
    check) check ;;
    *) echo "usage: $0 [up|check]" >&2; exit 2 ;;
esac
