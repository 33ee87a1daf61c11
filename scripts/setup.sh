#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with a CPU build of torch.
#
# Idempotent and fast when nothing changed: a stamp records what was installed, and the
# editable link tree is refreshed only when the set of source files changes.
#   PAL_VENV      where the environment lives (default: .venv in the repository)
#   PAL_EXTRAS    extras to install (default: all)
#   PAL_TORCH     torch requirement pinned through a constraints file (default: torch==2.13.0,
#                 a CPU wheel; pip must never pick a CUDA build on its own, which pulls GBs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PAL_VENV:-$root/.venv}"
extras="${PAL_EXTRAS:-all}"
torch_req="${PAL_TORCH:-torch==2.13.0}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv" >&2
    "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

constraints="$venv/pal-constraints.txt"
printf '%s\n' "$torch_req" > "$constraints.new"
# Re-install dependencies only when pyproject, the extras or the torch pin changed.
deps_key="$(cat "$root/pyproject.toml" "$constraints.new" | sha256sum | cut -c1-16)-$extras"
# Refresh the editable link tree when a source file is added, removed or renamed.
files_key="$(cd "$root" && find pal_atoms calculators dynamics oracles -name '*.py' -o -name py.typed | sort | sha256sum | cut -c1-16)"
stamp="$venv/.pal-stamp"
old="$(cat "$stamp" 2>/dev/null || true)"
mv "$constraints.new" "$constraints"

if [ "$old" != "$deps_key $files_key" ]; then
    if [ "${old%% *}" != "$deps_key" ]; then
        echo "setup: installing dependencies into $venv (first time: a few minutes)" >&2
        # torch first, exactly as pinned, so nothing below can swap it for a CUDA build.
        "${pip[@]}" install -c "$constraints" "$torch_req"
        "${pip[@]}" install -c "$constraints" "setuptools>=68" wheel
        "${pip[@]}" install -c "$constraints" -e "$root[$extras]" \
            --config-settings editable_mode=strict
    else
        # strict editable mode links files one by one (so mypy and IDEs see a plain tree);
        # a new module needs the link tree rebuilt, which needs no download.
        "${pip[@]}" install -c "$constraints" --no-deps --no-build-isolation -e "$root" \
            --config-settings editable_mode=strict
    fi
    echo "$deps_key $files_key" > "$stamp"
fi
