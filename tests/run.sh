#!/usr/bin/env bash
# Runs every test of anncat on one release build: the Rust unit and
# end-to-end tests, then the interop suite against Python anndata (whose venv
# this script creates and fills from the package registry on first use).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

echo "== build (release)"
cargo build --release --locked --workspace --all-targets

echo "== cargo test"
cargo test --release --locked --workspace

echo "== interop suite (Python anndata $(grep -m1 anndata tests/interop/requirements.txt))"
venv="$(bash tests/interop/setup_venv.sh)"
ANNCAT_BIN="$repo/target/release/anncat" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    -W ignore::DeprecationWarning tests/interop
