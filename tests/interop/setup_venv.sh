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
        python=""
        # pyenv's own build first: its shims answer even where no 3.12 is selected.
        for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 python3.12; do
            if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' > /dev/null 2>&1; then
                python="$candidate"
                break
            fi
        done
        [ -n "$python" ] || { echo "setup_venv.sh: CPython 3.12 not found (neither python3.12 on PATH nor in pyenv)" >&2; exit 1; }
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
