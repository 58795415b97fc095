#!/usr/bin/env bash
# The Python package as a user gets it: builds the wheel with maturin (HDF5
# linked statically), then
#   1. installs it in a fresh venv (Python 3.12, anndata 0.13) and runs
#      test_wheel.py there: the `anncat` command and module from the wheel,
#      `concat_on_disk` against `anndata.concat`;
#   2. installs it in a minimal Debian root made with debootstrap (no HDF5,
#      no Rust, no compiler) and concatenates zarr and h5ad inputs there, with
#      the command and with the module; the output is compared with the
#      host's by anndata;
#   3. `pip install .` from the checkout into another fresh venv.
# Caches under target/: the build venv (maturin, cmake), the Debian root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

python312="$(bash "$repo/tests/find_python312.sh" python_pkg/run.sh)"

echo "== wheel: maturin build (HDF5 from source, linked statically)"
build_venv="$repo/target/wheel-build-venv"
if [ ! -x "$build_venv/bin/maturin" ] || [ ! -x "$build_venv/bin/cmake" ]; then
    python3 -m venv "$build_venv"
    "$build_venv/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.7,<2' 'cmake>=3.26'
fi
rm -rf target/wheels
PATH="$build_venv/bin:$PATH" maturin build --release --locked --quiet -o target/wheels
wheel="$(ls target/wheels/anncat-*.whl)"
echo "built $wheel ($(du -h "$wheel" | cut -f1))"

echo "== wheel: a fresh venv (Python 3.12, anndata 0.13), the tests of test_wheel.py"
venv="$repo/target/wheel-test-venv"
rm -rf "$venv"
"$python312" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$wheel" \
    'anndata==0.13.4' 'pandas>=3.0,<3.1' 'zarr==3.4.2' h5py pytest 'dask[array]'
(cd "$here" && env -u ANNCAT_BIN PATH="/usr/bin:/bin" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    -W ignore::FutureWarning -W ignore::pytest.PytestUnknownMarkWarning test_wheel.py)

echo "== wheel: a minimal Debian root (debootstrap, no HDF5), the command and the module"
root="$repo/target/wheel-debian-root"
if [ ! -x "$root/usr/bin/python3" ]; then
    command -v debootstrap > /dev/null || {
        apt-get -o DPkg::Lock::Timeout=900 update -q > /dev/null
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q debootstrap > /dev/null
    }
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root.tmp" http://deb.debian.org/debian > /dev/null
    mv "$root.tmp" "$root"
fi
if ls "$root"/usr/lib/*/libhdf5* > /dev/null 2>&1; then
    echo "the Debian root has an HDF5 library; it must not" >&2
    exit 1
fi
work="$root/anncat-test"
# anncat starts its workers from /proc/self/exe: the root gets its own /proc,
# unmounted when the script ends, whatever happens.
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2> /dev/null || true' EXIT
rm -rf "$work"
mkdir -p "$work"
cp "$wheel" "$work/"
cp -r examples/data/batch1.zarr examples/data/batch2.zarr examples/data/batch3.zarr "$work/"
host_venv="$(bash tests/interop/setup_venv.sh 0.12)"
# A gzip-compressed .h5ad input too (written by the host's anndata): the
# static HDF5 and its zlib filter.
"$host_venv/bin/python" -c 'import anndata as ad, sys; ad.read_zarr(sys.argv[1]).write_h5ad(sys.argv[2], compression="gzip")' \
    "$work/batch3.zarr" "$work/batch3.h5ad"
chroot "$root" /bin/sh -euc '
    cd /anncat-test
    python3 -m venv venv
    venv/bin/pip install --quiet --no-index --disable-pip-version-check ./anncat-*.whl
    venv/bin/anncat --version
    venv/bin/anncat concat a=batch1.zarr b=batch2.zarr c=batch3.h5ad -o cli.zarr --join outer --label batch --index-unique - --workers 2 --quiet
    venv/bin/anncat concat batch1.zarr batch2.zarr batch3.zarr -o cli.h5ad --join outer --quiet
    venv/bin/python -c "
import anncat
anncat.concat_on_disk({\"a\": \"batch1.zarr\", \"b\": \"batch2.zarr\", \"c\": \"batch3.h5ad\"}, \"api.zarr\",
                      join=\"outer\", label=\"batch\", index_unique=\"-\", workers=2)
print(\"inspect:\", anncat.inspect(\"api.zarr\")[\"container\"])
"'
"$host_venv/bin/python" - "$work" <<'PY'
import sys
from pathlib import Path

import anndata as ad
from anndata.tests.helpers import assert_equal

work = Path(sys.argv[1])
inputs = {"a": ad.read_zarr(work / "batch1.zarr"), "b": ad.read_zarr(work / "batch2.zarr"),
          "c": ad.read_h5ad(work / "batch3.h5ad")}
expected = ad.concat(inputs, join="outer", label="batch", index_unique="-")
assert_equal(ad.read_zarr(work / "cli.zarr"), expected)
assert_equal(ad.read_zarr(work / "api.zarr"), expected)
plain = ad.concat([ad.read_zarr(work / f"batch{i}.zarr") for i in (1, 2, 3)], join="outer")
assert_equal(ad.read_h5ad(work / "cli.h5ad"), plain)
print("the Debian root's outputs equal anndata.concat of the same inputs")
PY
rm -rf "$work"

echo "== pip install . from the checkout (a fresh venv; maturin and cmake from the registry)"
src_venv="$repo/target/wheel-src-venv"
rm -rf "$src_venv"
"$python312" -m venv "$src_venv"
"$src_venv/bin/pip" install --quiet --disable-pip-version-check "$repo"
"$src_venv/bin/anncat" --version
"$src_venv/bin/python" -c 'import anncat, pathlib, sys; b = pathlib.Path(anncat.binary()); assert b.parent == pathlib.Path(sys.executable).parent, b; print("pip install . gives", b)'
