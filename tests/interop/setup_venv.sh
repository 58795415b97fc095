#!/usr/bin/env bash
# Creates (once) a Python venv for the interop tests and benchmarks, with
# anndata and zarr-python from the package registry. Prints the venv path.
#
#   setup_venv.sh [0.12|0.13]
#
# 0.12 (the default): the machine's python3 with requirements.txt (anndata
# 0.12, pandas 2), in target/interop-venv.
# 0.13: CPython 3.12 (found on PATH, or in pyenv's versions) with
# requirements-0.13.txt (anndata 0.13, pandas 3), in target/interop-venv-0.13.
# ANNCAT_VENV overrides the location.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
profile="${1:-0.12}"
case "$profile" in
    0.12)
        requirements="$here/requirements.txt"
        venv="${ANNCAT_VENV:-$repo/target/interop-venv}"
        python="python3"
        ;;
    0.13)
        requirements="$here/requirements-0.13.txt"
        venv="${ANNCAT_VENV:-$repo/target/interop-venv-0.13}"
        python="$(bash "$repo/tests/find_python312.sh" setup_venv.sh)"
        ;;
    *)
        echo "setup_venv.sh: unknown profile $profile (expected 0.12 or 0.13)" >&2
        exit 2
        ;;
esac
stamp="$venv/.requirements.sha"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up Python venv ($profile) in $venv" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" > "$stamp"
fi
echo "$venv"
