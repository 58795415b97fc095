#!/usr/bin/env bash
# Runs anndata's own tests/test_concatenate_disk.py with anncat standing in
# for concat_on_disk (tests/anndata_suite/anncat_plugin.py), under one of the
# interop venvs:
#
#   run.sh 0.12|0.13 [pytest args...]
#
# The suite is taken from anndata's sdist, downloaded from the package
# registry (cached under target/anndata-suite), at the version installed in
# the venv. ANNCAT_BIN names the binary (default target/release/anncat).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
profile="${1:?usage: run.sh 0.12|0.13 [pytest args...]}"
shift
venv="$(bash "$repo/tests/interop/setup_venv.sh" "$profile")"
py="$venv/bin/python"
version="$("$py" -c 'from importlib.metadata import version; print(version("anndata"))')"
cache="$repo/target/anndata-suite"
sdist="$cache/anndata-$version.tar.gz"
if [ ! -s "$sdist" ]; then
    mkdir -p "$cache"
    # pip fetches the sdist from the registry (building its metadata on the way).
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: "anndata==$version" -d "$cache" >&2
fi
work="$cache/anndata-$version"
rm -rf "$work"
mkdir -p "$work/tests"
tar -xzf "$sdist" -C "$work" --strip-components=1 \
    "anndata-$version/tests/conftest.py" "anndata-$version/tests/test_concatenate_disk.py"
cat > "$work/pytest.ini" <<'INI'
[pytest]
addopts = --import-mode=importlib -p testing.anndata._pytest -p anncat_plugin -p no:cacheprovider
filterwarnings =
    ignore::anndata._warnings.OldFormatWarning
    ignore::anndata._warnings.ExperimentalFeatureWarning
INI
ANNCAT_BIN="$(realpath "${ANNCAT_BIN:-$repo/target/release/anncat}")"
export ANNCAT_BIN
export ANNCAT_SUITE_CALLS="$work/anncat-calls.log"
rm -f "$ANNCAT_SUITE_CALLS"
export PYTHONPATH="$here:$repo/python${PYTHONPATH:+:$PYTHONPATH}"
cd "$work"
echo "anndata $version: tests/test_concatenate_disk.py with anncat ($ANNCAT_BIN)" >&2
exec "$py" -m pytest -q -rfE tests/test_concatenate_disk.py "$@"
