#!/usr/bin/env python
"""../shared/bench/run_anndata.py for .h5ad inputs: the same harness (timing,
sampled RSS, concat_on_disk), with its zarr-only input probes (`x_info`,
`zarr_format_of`) answered from HDF5 for files ending in .h5ad. Used by
compare.py for the h5ad rows, and for every row with the anndata 0.13 +
zarrs peer; arguments are run_anndata.py's.

With ANNCAT_BENCH_ZARRS_PIPELINE=1 zarr-python decodes and encodes through
the zarrs package's Rust codec pipeline, the fastest Python configuration:
`zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})`."""

import os
import sys
from pathlib import Path

BENCH = (Path(__file__).resolve().parent.parent / ".." / "shared" / "bench").resolve()
sys.path.insert(0, str(BENCH))

import h5py  # noqa: E402
import run_anndata  # noqa: E402

_zarr_x_info = run_anndata.x_info
_zarr_format_of = run_anndata.zarr_format_of


def x_info(path: Path) -> dict:
    if path.suffix != ".h5ad":
        return _zarr_x_info(path)
    with h5py.File(path, "r") as f:
        x = f["X"]
        enc = x.attrs.get("encoding-type")
        if isinstance(enc, bytes):
            enc = enc.decode()
        if enc in ("csr_matrix", "csc_matrix"):
            return {"enc": enc, "shape": tuple(int(v) for v in x.attrs["shape"]), "nnz": int(x["indices"].shape[0])}
        return {"enc": enc, "shape": tuple(x.shape), "nnz": int(x.shape[0]) * int(x.shape[1])}


def zarr_format_of(path: Path) -> int:
    return 2 if path.suffix == ".h5ad" else _zarr_format_of(path)


run_anndata.x_info = x_info
run_anndata.zarr_format_of = zarr_format_of

if os.environ.get("ANNCAT_BENCH_ZARRS_PIPELINE") == "1":
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})

if __name__ == "__main__":
    sys.exit(run_anndata.main(sys.argv[1:]))
