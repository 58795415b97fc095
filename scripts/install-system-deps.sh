#!/usr/bin/env bash
# Installs the system libraries anncat builds against, from Debian's
# packages, when they are missing: HDF5 (libhdf5-dev, for .h5ad inputs) and
# pkg-config. Runs apt-get as root, or through sudo.
set -euo pipefail
if pkg-config --exists hdf5 2> /dev/null; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "== installing libhdf5-dev and pkg-config (Debian packages)" >&2
$sudo apt-get update -q > /dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    libhdf5-dev pkg-config > /dev/null
pkg-config --exists hdf5 || { echo "HDF5 is still not found by pkg-config" >&2; exit 1; }
